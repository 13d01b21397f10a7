"""`--resume auto` skips finished stages and continues an interrupted stage from its checkpoint."""
from __future__ import annotations

import json

import pytest

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
