"""self_improve: the curriculum, the patience stop, and a tiny real run with its per-round table."""
from __future__ import annotations

import json

import pytest

from rlvr.config import ConfigError, from_dict
from rlvr.pipeline.recipe import parse_recipe
from rlvr.pipeline.runner import run_recipe
from rlvr.pipeline.stages.self_improve import CurriculumConfig, SelfImproveConfig, _update


@pytest.mark.parametrize("level,pass_rate,expected", [
    (2, 0.9, 3),   # above up_threshold: harder
    (2, 0.5, 2),   # between the thresholds: stay
    (2, 0.1, 1),   # below down_threshold: easier
    (5, 0.9, 5),   # already at max_level
    (1, 0.0, 1),   # already at min_level
])
def test_curriculum_moves_with_the_pass_rate(level, pass_rate, expected):
    assert CurriculumConfig(up_threshold=0.8, down_threshold=0.2).next_level(level, pass_rate) == expected


def test_bad_curriculum_is_a_config_error():
    with pytest.raises(ConfigError, match="down_threshold < up_threshold"):
        from_dict(SelfImproveConfig, {"curriculum": {"up_threshold": 0.1, "down_threshold": 0.5}})


def test_generate_difficulty_is_refused_naming_the_curriculum():
    with pytest.raises(ConfigError, match=r"stages.3.generate.difficulty: the curriculum sets each round's "
                                          r"level; set curriculum.start"):
        from_dict(SelfImproveConfig, {"generate": {"difficulty": 3}}, "stages.3")


def test_eval_difficulty_picks_the_held_out_level(tmp_path, monkeypatch):
    import rlvr.pipeline.stages.eval as eval_stage

    levels = []

    def fake_evaluate(policy, examples, fmt, cfg, seed):  # records what each round scores
        levels.append({ex.difficulty for ex in examples})
        return {"accuracy": 0.0, "mean_completion_tokens": 1.0}

    monkeypatch.setattr(eval_stage, "evaluate", fake_evaluate)
    for eval_level, expected in ((None, {2}), (1, {1})):
        levels.clear()
        recipe = parse_recipe({**TINY, "stages": [{
            "type": "self_improve", "name": "loop", "rounds": 1,
            "generate": {"num_problems": 2, "num_generations": 1, "max_new_tokens": 4},
            "eval": {"num_problems": 3, "num_generations": 0, "difficulty": eval_level}}]})
        run_recipe(recipe, tmp_path / f"run-{eval_level}")
        assert levels == [expected]


TINY = {"name": "si", "template": "plain",
        "model": {"name_or_path": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                                   "intermediate_size": 64}},
        "task": {"name": "arithmetic", "difficulty": 2, "options": {"ops": ["+"]}}}


def test_patience_counts_rounds_without_gain_and_keeps_the_best():
    cfg = SelfImproveConfig(patience=2, min_gain=0.01)
    state = {"level": 1, "best": None, "best_model": None, "best_round": None, "stale": 0, "model_dir": None}
    for r, acc in enumerate([0.30, 0.50, 0.505, 0.40]):
        _update(state, {"round": r, "accuracy": acc, "next_difficulty": 1, "model_dir": f"m{r}"}, cfg)
    assert (state["best"], state["best_round"], state["best_model"], state["stale"]) == (0.50, 1, "m1", 2)


def test_tiny_self_improve_run_writes_a_round_table(tmp_path):
    recipe = parse_recipe({
        "name": "si",
        "model": {"name_or_path": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                                   "intermediate_size": 64}},
        "task": {"name": "arithmetic", "difficulty": 2, "options": {"ops": ["+"]}},
        "template": "plain",
        "stages": [{
            "type": "self_improve", "name": "loop", "rounds": 3, "patience": 1, "train": "grpo",
            "generate": {"num_problems": 4, "num_generations": 2, "max_new_tokens": 12},
            "grpo": {"steps": 1, "prompts_per_step": 2, "num_generations": 2, "max_new_tokens": 12,
                     "report_to": "none", "sample_every": 0},
            "eval": {"num_problems": 4, "num_generations": 0, "max_new_tokens": 12},
            "curriculum": {"min_level": 1, "max_level": 3, "down_threshold": 0.2},
        }],
    })
    summary = run_recipe(recipe, tmp_path / "run")
    stage = summary["stages"][0]
    rounds = stage["metrics"]["rounds"]
    # An untrained model scores nothing: no gain after round 0, so patience 1 stops after round 1,
    # and a pass rate under down_threshold moves the level down from 2 to 1.
    assert len(rounds) == stage["metrics"]["rounds_run"] == 2
    assert [r["difficulty"] for r in rounds] == [2, 1] and all(r["pass_rate"] < 0.2 for r in rounds)
    assert summary["accuracy_per_stage"] == {"loop": stage["metrics"]["accuracy"]}
    folder = tmp_path / "run" / "0-loop"
    assert (folder / "model" / "model.safetensors").is_file()
    assert (folder / "rounds.md").read_text().count("\n") == 2 + len(rounds)
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1]
    assert (tmp_path / "run" / "plots" / "accuracy_per_round.png").is_file()
