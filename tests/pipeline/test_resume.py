"""`--resume auto` skips finished stages and continues an interrupted stage from its checkpoint."""
from __future__ import annotations

import json

import pytest
import torch

from rlvr.config import ConfigError
from rlvr.pipeline import fingerprint
from rlvr.pipeline.recipe import parse_recipe
from rlvr.pipeline.runner import run_recipe

TINY = {"name_or_path": "tiny",
        "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}}
RECIPE = {
    "name": "resume",
    "model": TINY,
    "task": {"name": "arithmetic", "difficulty": 1, "options": {"ops": ["+"]}},
    "template": "plain",
    "stages": [
        {"type": "sft", "name": "cold", "dataset_from": "generator", "steps": 2, "num_examples": 16,
         "batch_size": 4, "logging_steps": 1},
        {"type": "grpo", "name": "grpo", "steps": 4, "prompts_per_step": 2, "num_generations": 2,
         "max_new_tokens": 12, "learning_rate": 1e-4, "save_every": 2, "report_to": "none", "sample_every": 0},
        {"type": "sft", "name": "last", "dataset_from": "generator", "steps": 4, "num_examples": 16,
         "batch_size": 4, "save_steps": 2, "logging_steps": 1},
    ],
}


class Interrupt(Exception):
    """Stands in for a killed process."""


def test_resume_continues_the_interrupted_stage_where_it_stopped(tmp_path, monkeypatch):
    import trl

    import rlvr.trainer.grpo as grpo

    recipe = parse_recipe(RECIPE)
    out = tmp_path / "run"

    # 1) GRPO dies in its 3rd step, after the checkpoint of step 2.
    grpo_steps = []
    real_train = grpo.train_on_batch

    def counting_train(t, batch, advantages, cfg, state):
        grpo_steps.append(state.step)
        if len(grpo_steps) == 3:
            raise Interrupt
        return real_train(t, batch, advantages, cfg, state)

    monkeypatch.setattr(grpo, "train_on_batch", counting_train)
    with pytest.raises(Interrupt):
        run_recipe(recipe, out)
    cold_done = (out / "0-cold" / "DONE.json").read_text()
    assert not (out / "1-grpo" / "DONE.json").exists()

    # 2) Resumed: the cold start is not re-run, GRPO runs only its steps 3 and 4; then the last SFT
    #    dies in its 3rd step (after checkpoint-2).
    grpo_steps.clear()
    sft_first_steps = []
    real_sft = trl.SFTTrainer

    class InterruptingSFT(real_sft):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(_StepWatcher(sft_first_steps))

    monkeypatch.setattr(trl, "SFTTrainer", InterruptingSFT)
    with pytest.raises(Interrupt):
        run_recipe(recipe, out, resume=True)
    assert len(grpo_steps) == 2, grpo_steps
    assert (out / "0-cold" / "DONE.json").read_text() == cold_done
    assert (out / "1-grpo" / "DONE.json").is_file()
    assert sft_first_steps == [0]  # the last stage started from scratch, then died

    # 3) Resumed again: only the last SFT runs, from its step-2 checkpoint, and the run finishes.
    sft_first_steps.clear()
    grpo_steps.clear()
    summary = run_recipe(recipe, out, resume=True)
    assert sft_first_steps == [2]
    assert grpo_steps == []
    assert summary["finished"]
    assert [s["status"] for s in summary["stages"]] == ["done"] * 3
    assert json.loads((out / "2-last" / "DONE.json").read_text())["metrics"]["sft/steps"] == 4
    grpo_rows = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                 if r["stage"] == "grpo"]
    assert [r["step"] for r in grpo_rows] == [1, 2, 3, 4]  # no step lost or logged twice


class _StepWatcher:
    """TrainerCallback: records the step training starts at; raises in the 3rd step of a fresh run."""

    def __init__(self, first_steps: list):
        self.first_steps = first_steps

    def __getattr__(self, name):  # the other callback events: do nothing
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_train_begin(self, args, state, control, **kwargs):
        self.first_steps.append(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first_steps == [0] and state.global_step == 2:
            raise Interrupt


def _with_grpo(**options):
    data = json.loads(json.dumps(RECIPE))
    data["stages"][1].update(options)
    return parse_recipe(data)


def test_a_run_stopped_by_memory_resumes_its_stage_with_smaller_micro_batches(tmp_path, monkeypatch):
    """The out-of-memory flow: GRPO dies in step 3 (after the step-2 checkpoint); the user sets
    micro_batch_tokens and gradient checkpointing, which change how a step runs, not what it
    computes, and `--resume auto` continues the stage at step 3 instead of refusing the changed
    settings or starting the stage again. A setting that changes the update is still refused."""
    import rlvr.trainer.grpo as grpo

    out = tmp_path / "run"
    steps, real_train = [], grpo.train_on_batch

    def train(t, batch, advantages, cfg, state):
        steps.append((state.step, cfg.micro_batch_tokens))
        if len(steps) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_train(t, batch, advantages, cfg, state)

    monkeypatch.setattr(grpo, "train_on_batch", train)
    with pytest.raises(torch.OutOfMemoryError):
        run_recipe(_with_grpo(), out)
    with pytest.raises(ConfigError, match=r"stages\.1\.learning_rate: 0\.0001 -> 0\.001"):
        run_recipe(_with_grpo(learning_rate=1e-3, micro_batch_tokens=16), out, resume=True)

    steps.clear()
    smaller = _with_grpo(micro_batch_tokens=16, save_every=1)
    smaller.model.gradient_checkpointing = True
    assert run_recipe(smaller, out, resume=True)["finished"]
    assert steps == [(2, 16), (3, 16)]  # steps 3 and 4 (state.step counts those done), in micro-batches
    recorded = json.loads((out / "1-grpo" / "FINGERPRINT.json").read_text())
    assert recorded["format"] == 2 and "micro_batch_tokens" not in recorded["settings"]["options"]


def test_a_record_from_before_run_only_keys_still_matches(tmp_path):
    """FINGERPRINT.json of format 1 (no `format`; its digest and settings hold micro_batch_size and
    the rest): the same settings resume, a changed run-only key resumes, a changed key is named."""
    out = tmp_path / "run"
    run_recipe(_with_grpo(), out)
    for path in out.glob("*/FINGERPRINT.json"):
        index = int(path.parent.name.split("-")[0])
        settings = fingerprint.stage_settings(_with_grpo(), index, run_only=True)
        path.write_text(json.dumps({"fingerprint": fingerprint.digest(settings), "settings": settings}))
    done = (out / "1-grpo" / "DONE.json").read_text()
    run_recipe(_with_grpo(), out, resume=True)
    run_recipe(_with_grpo(micro_batch_size=2, log_every=2), out, resume=True)
    assert (out / "1-grpo" / "DONE.json").read_text() == done  # skipped both times
    with pytest.raises(ConfigError, match=r"stage 1 grpo .*stages\.1\.num_generations: 2 -> 4"):
        run_recipe(_with_grpo(num_generations=4), out, resume=True)
