"""One engine block (`rlvr.rollout.engine_config.EngineConfig`): a recipe's `engine:` reaches every
stage that samples, self_improve's rounds included; a stage's own keys win; a bare name is
shorthand for `{name: ...}`; a bad option is named by its dotted key before anything runs."""
from __future__ import annotations

import copy

import pytest
import yaml

from rlvr.cli import main as rlvr_main
from rlvr.config import ConfigError
from rlvr.pipeline.recipe import parse_recipe
from rlvr.rollout.engine_config import EngineConfig
from recipe_blocks import blocks_of

RECIPE = {
    "name": "t",
    "model": {"name_or_path": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                               "intermediate_size": 64}},
    "task": {"name": "arithmetic", "difficulty": 1, "options": {"ops": ["+"]}},
    "engine": {"name": "fast", "kernels": "torch", "max_graphs": 2},
    "stages": [
        {"type": "eval", "name": "ev"},
        {"type": "rejection_sampling", "name": "rs"},
        {"type": "grpo", "name": "g"},
        {"type": "self_improve", "name": "si", "train": "grpo", "generate": {"num_problems": 4}},
        {"type": "eval", "name": "ev-own", "engine": "hf"},
        {"type": "grpo", "name": "g-own", "engine": {"compact": False}},
        {"type": "self_improve", "name": "si-own", "engine": {"check_every": 4}, "eval": {"engine": "hf"}},
    ],
}


def test_the_recipe_engine_reaches_every_sampling_stage_and_round():
    blocks = blocks_of(parse_recipe(RECIPE), "engine")
    inherited = EngineConfig(name="fast", kernels="torch", max_graphs=2)
    for place in ("ev", "rs", "g", "si", "si.generate", "si.eval", "si.grpo"):
        assert blocks[place] == inherited, place


def test_a_stage_engine_overrides_the_recipe_key_by_key():
    blocks = blocks_of(parse_recipe(RECIPE), "engine")
    assert blocks["ev-own"] == EngineConfig(name="hf", kernels="torch", max_graphs=2)  # a name: only the name
    assert blocks["g-own"] == EngineConfig(name="fast", kernels="torch", max_graphs=2, compact=False)
    for place in ("si-own", "si-own.generate", "si-own.grpo"):
        assert blocks[place] == EngineConfig(name="fast", kernels="torch", max_graphs=2, check_every=4), place
    assert blocks["si-own.eval"] == EngineConfig(name="hf", kernels="torch", max_graphs=2, check_every=4)


def test_a_bare_name_is_shorthand_and_no_block_keeps_the_fast_engine_defaults():
    data = copy.deepcopy(RECIPE)
    data["engine"] = "hf"
    assert blocks_of(parse_recipe(data), "engine")["rs"] == EngineConfig(name="hf")
    data.pop("engine")
    blocks = blocks_of(parse_recipe(data), "engine")
    assert blocks["ev"] == blocks["si.grpo"] == EngineConfig()
    assert blocks["ev-own"] == EngineConfig(name="hf")


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["stages"][2].update(engine={"kernel": "torch"}), "unknown key stages.2.engine.kernel; valid keys"),
    (lambda d: d["stages"][5]["engine"].update(kernels="cuda"),
     "stages.5.engine.kernels: must be auto, triton or torch, got 'cuda'"),
    (lambda d: d["stages"][1].update(engine={"max_graphs": 0}), "stages.1.engine.max_graphs: must be >= 1, got 0"),
    (lambda d: d["stages"][4].update(engine="vllm"), "stages.4.engine.name: unknown rollout engine 'vllm'"),
    (lambda d: d["stages"][6]["eval"].update(engine={"compact": "yes"}),
     "stages.6.eval.engine.compact: expected true or false"),
    (lambda d: d["engine"].update(compile=3), "engine.compile: expected true or false, got 3"),
    (lambda d: d["engine"].update(refill_rows=-2), "engine.refill_rows: must be >= 0 (0: no refill), got -2"),
])
def test_bad_engine_options_fail_validate_only_naming_their_key(tmp_path, capsys, edit, message):
    data = copy.deepcopy(RECIPE)
    edit(data)
    with pytest.raises(ConfigError, match="engine"):
        parse_recipe(data)
    path, out = tmp_path / "recipe.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(data))
    assert rlvr_main(["run", str(path), "--output-dir", str(out), "--validate-only"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_set_reaches_the_engine_block_and_python_takes_a_bare_name():
    from rlvr.pipeline.recipe import load_recipe
    from rlvr.pipeline.stages.eval import EvalStageConfig

    recipe = load_recipe("recipes/arithmetic-r1.yaml", ["engine.kernels=torch", "stages.2.engine=hf"])
    assert recipe.stage("eval-cold-start").options.engine == EngineConfig(kernels="torch")
    assert recipe.stage("grpo-1").options.engine == EngineConfig(name="hf", kernels="torch")
    assert EvalStageConfig(engine="fast").engine == EngineConfig(name="fast")
