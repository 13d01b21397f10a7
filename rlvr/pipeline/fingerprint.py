"""What a stage ran with, so a resume skips a finished stage only when it would run the same.

A stage's settings are its type, effective options, the recipe-level keys every stage depends on
(base model, task, template, instruction, seed) and the fingerprints of the stages whose model and dataset it
reads; its fingerprint is a hash of them. Each stage folder keeps both in `FINGERPRINT.json`
(written when the stage starts), so a changed key can be named.

Keys that change how a step runs but not what it computes (micro-batching, gradient checkpointing,
kernels, checkpoint and logging cadence: `RUN_ONLY_KEYS`) are left out: a run stopped by an
out-of-memory error resumes with a smaller `micro_batch_tokens` instead of starting its stage again.
The update is the same up to the order of floating-point sums.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from rlvr.config import to_dict

FINGERPRINT_FILE = "FINGERPRINT.json"
FORMAT = 2
"""FINGERPRINT.json's format: 2 leaves `RUN_ONLY_KEYS` out; records without a format (1) kept them."""
RUN_ONLY_KEYS = {
    "options": ("micro_batch_size", "micro_batch_tokens", "packing", "packing_row_tokens", "kernels",
                "attention_backends", "save_every", "keep_last", "log_every", "sample_every", "num_samples",
                "report_to", "max_consecutive_nonfinite", "save_steps", "logging_steps", "split_on_oom"),
    "model": ("gradient_checkpointing",),
}


def stage_settings(recipe, index: int, _memo: dict | None = None, run_only: bool = False) -> dict:
    """Plain data that decides what stage `index` produces (inputs by fingerprint); `run_only`
    keeps `RUN_ONLY_KEYS`, as records of format 1 did."""
    memo = {} if _memo is None else _memo
    stage = recipe.stages[index]
    inputs = {}
    for role, source in (("model", stage.model_from), ("dataset", stage.dataset_from)):
        j = next((i for i, s in enumerate(recipe.stages) if s.name == source), None)
        if j is not None:
            inputs[role] = f"{source}@{fingerprint_of(recipe, j, memo, run_only)}"
    settings = {"type": stage.type, "model_from": stage.model_from, "dataset_from": stage.dataset_from,
                "options": to_dict(stage.options), "model": to_dict(recipe.model),
                "task": to_dict(recipe.task), "template": recipe.template,
                "instruction": recipe.instruction, "seed": recipe.seed, "inputs": inputs}
    return settings if run_only else without_run_only(settings)


def without_run_only(settings: dict) -> dict:
    """`settings` less `RUN_ONLY_KEYS`."""
    return {k: ({n: x for n, x in v.items() if n not in RUN_ONLY_KEYS[k]} if k in RUN_ONLY_KEYS and isinstance(v, dict)
                else v) for k, v in settings.items()}


def fingerprint_of(recipe, index: int, _memo: dict | None = None, run_only: bool = False) -> str:
    memo = {} if _memo is None else _memo
    if (index, run_only) not in memo:
        memo[index, run_only] = digest(stage_settings(recipe, index, memo, run_only))
    return memo[index, run_only]


def matches(recorded: dict, recipe, index: int, memo: dict) -> bool:
    """Whether a stage folder's record says it ran with the recipe's settings for stage `index`.
    A format-1 record's digest covered the run-only keys and its inputs name format-1 digests, so
    it is compared key by key without them; its inputs were checked as the earlier stages' records
    (`runner.plan_resume` stops at the first stage that differs)."""
    if recorded.get("format", 1) >= FORMAT:
        return recorded.get("fingerprint") == fingerprint_of(recipe, index, memo)
    now = stage_settings(recipe, index, memo)
    old = without_run_only(recorded.get("settings", {}))
    return digest({**old, "inputs": None}) == digest({**now, "inputs": None})  # as JSON, like the record


def digest(settings: dict) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_recorded(sdir: Path) -> dict | None:
    """The settings a stage folder ran with, None when it recorded none (older runs)."""
    path = Path(sdir) / FINGERPRINT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def record(sdir: Path, recipe, index: int) -> None:
    settings = stage_settings(recipe, index)
    data = {"format": FORMAT, "fingerprint": digest(settings), "settings": settings}
    tmp = Path(sdir) / f"{FINGERPRINT_FILE}.tmp"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    os.replace(tmp, Path(sdir) / FINGERPRINT_FILE)


def changed_keys(old: dict, new: dict, index: int) -> list[str]:
    """Dotted recipe keys whose values differ, e.g. `stages.1.num_problems: 8 -> 16`."""
    a, b = _flat(old), _flat(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            out.append(f"{_recipe_key(key, index)}: {a.get(key, '<unset>')} -> {b.get(key, '<unset>')}")
    return out


def _recipe_key(key: str, index: int) -> str:
    head, _, rest = key.partition(".")
    if head == "options":
        return f"stages.{index}.{rest}"
    if head in ("type", "model_from", "dataset_from"):
        return f"stages.{index}.{head}"
    if head == "inputs":
        return f"input {rest} (an earlier stage's settings changed)"
    return key


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = json.dumps(v, default=str) if isinstance(v, (list, dict)) else v
    return out
