"""What a stage ran with, so a resume skips a finished stage only when it would run the same.

A stage's settings are its type, effective options, the recipe-level keys every stage depends on
(base model, task, template, instruction, seed) and the fingerprints of the stages whose model and dataset it
reads; its fingerprint is a hash of them. Each stage folder keeps both in `FINGERPRINT.json`
(written when the stage starts), so a changed key can be named.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from rlvr.config import to_dict

FINGERPRINT_FILE = "FINGERPRINT.json"


def stage_settings(recipe, index: int, _memo: dict | None = None) -> dict:
    """Plain data that decides what stage `index` produces (inputs by fingerprint)."""
    memo = {} if _memo is None else _memo
    stage = recipe.stages[index]
    inputs = {}
    for role, source in (("model", stage.model_from), ("dataset", stage.dataset_from)):
        j = next((i for i, s in enumerate(recipe.stages) if s.name == source), None)
        if j is not None:
            inputs[role] = f"{source}@{fingerprint_of(recipe, j, memo)}"
    return {"type": stage.type, "model_from": stage.model_from, "dataset_from": stage.dataset_from,
            "options": to_dict(stage.options), "model": to_dict(recipe.model),
            "task": to_dict(recipe.task), "template": recipe.template,
            "instruction": recipe.instruction, "seed": recipe.seed, "inputs": inputs}


def fingerprint_of(recipe, index: int, _memo: dict | None = None) -> str:
    memo = {} if _memo is None else _memo
    if index not in memo:
        memo[index] = digest(stage_settings(recipe, index, memo))
    return memo[index]


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
    data = {"fingerprint": digest(settings), "settings": settings}
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
