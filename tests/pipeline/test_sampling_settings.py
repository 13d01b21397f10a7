"""One sampling block (`rlvr.rollout.sampling.SamplingConfig`): a recipe's `sampling:` reaches every
stage that samples, self_improve's rounds included; a stage's own keys (block or flat) win."""
from __future__ import annotations

import copy

import pytest

from rlvr.config import ConfigError, from_dict
from rlvr.pipeline.recipe import load_recipe, parse_recipe
from rlvr.pipeline.stages.eval import EvalStageConfig
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.sampling import SamplingConfig
from rlvr.trainer.config import GRPOConfig
from recipe_blocks import blocks_of

RECIPE = {
    "name": "t",
    "model": {"name_or_path": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                               "intermediate_size": 64}},
    "task": {"name": "arithmetic", "difficulty": 1, "options": {"ops": ["+"]}},
    "sampling": {"max_new_tokens": 48, "temperature": 0.7, "stop": ["</answer>"]},
    "stages": [
        {"type": "eval", "name": "ev"},
        {"type": "rejection_sampling", "name": "rs"},
        {"type": "grpo", "name": "g"},
        {"type": "self_improve", "name": "si", "train": "grpo", "generate": {"num_problems": 4}},
        {"type": "eval", "name": "ev-own", "max_new_tokens": 16, "sampling": {"top_p": 0.9}},
        {"type": "grpo", "name": "g-own", "sampling": {"temperature": 1.0, "stop": []}},
        {"type": "self_improve", "name": "si-own", "sampling": {"max_new_tokens": 32},
         "eval": {"num_problems": 3, "sampling": {"top_k": 5}}},
    ],
}


def test_the_recipe_default_reaches_every_sampling_stage_and_round():
    blocks = blocks_of(parse_recipe(RECIPE), "sampling")
    inherited = SamplingConfig(max_new_tokens=48, temperature=0.7, stop=["</answer>"])
    for place in ("ev", "rs", "g", "si", "si.generate", "si.eval", "si.grpo"):
        assert blocks[place] == inherited, place


def test_a_stage_value_overrides_the_recipe_default_key_by_key():
    blocks = blocks_of(parse_recipe(RECIPE), "sampling")
    assert blocks["ev-own"] == SamplingConfig(max_new_tokens=16, temperature=0.7, top_p=0.9, stop=["</answer>"])
    assert blocks["g-own"] == SamplingConfig(max_new_tokens=48, temperature=1.0, stop=[])
    # self_improve's own block is the default of its rounds, each of which may override it again
    for place in ("si-own", "si-own.generate", "si-own.grpo"):
        assert blocks[place] == SamplingConfig(max_new_tokens=32, temperature=0.7, stop=["</answer>"]), place
    assert blocks["si-own.eval"] == SamplingConfig(max_new_tokens=32, temperature=0.7, top_k=5, stop=["</answer>"])


def test_without_a_recipe_block_the_defaults_live_in_sampling_config():
    data = copy.deepcopy(RECIPE)
    data.pop("sampling")
    blocks = blocks_of(parse_recipe(data), "sampling")
    for place in ("ev", "rs", "g", "si.generate", "si.eval", "si.grpo"):
        assert blocks[place] == SamplingConfig(), place
    # a left-out nested config keeps its own non-sampling defaults (self_improve's eval draws no samples)
    si = parse_recipe(data).stage("si").options
    assert si.eval.num_generations == 0 and si.eval.num_problems == 200


def test_shipped_recipe_keeps_its_per_stage_values_and_set_reaches_the_block():
    recipe = load_recipe("recipes/arithmetic-r1.yaml")
    assert recipe.stage("grpo-1").options.sampling == SamplingConfig(max_new_tokens=64, stop=["</answer>"])
    assert recipe.stage("rejection-sampling").options.sampling == SamplingConfig(max_new_tokens=64)
    recipe = load_recipe("recipes/arithmetic-r1.yaml", ["sampling.top_k=7", "stages.2.sampling.top_k=3"])
    assert recipe.stage("eval-cold-start").options.sampling.top_k == 7
    assert recipe.stage("grpo-1").options.sampling.top_k == 3


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["sampling"].update(temperature=-1), "sampling.temperature: must be >= 0"),
    (lambda d: d["stages"][5]["sampling"].update(top_p=0), "stages.5.sampling.top_p: must be in (0, 1]"),
    (lambda d: d["stages"][4].update(top_k=-2), "stages.4.sampling.top_k: must be >= 0"),
    (lambda d: d["stages"][4].update(top_p=0.5), "stages.4.top_p: given twice (also as sampling.top_p)"),
    (lambda d: d["stages"][6]["eval"]["sampling"].update(max_new_tokens=0),
     "stages.6.eval.sampling.max_new_tokens: must be >= 1"),
    (lambda d: d["sampling"].update(temprature=1), "unknown key sampling.temprature"),
    # a recipe default that one stage cannot take is named at that stage
    (lambda d: d["sampling"].update(temperature=0), "stages.1.sampling.temperature: must be > 0"),
])
def test_bad_sampling_values_name_their_key(edit, message):
    data = copy.deepcopy(RECIPE)
    edit(data)
    with pytest.raises(ConfigError) as err:
        parse_recipe(data)
    assert message in str(err.value)


def test_flat_keys_and_python_configs_build_the_same_block():
    assert from_dict(GRPOConfig, {"max_new_tokens": 9, "temperature": 0.5}).sampling == \
        GRPOConfig(sampling=SamplingConfig(max_new_tokens=9, temperature=0.5)).sampling
    assert SamplingParams.of(EvalStageConfig().sampling, seed=3) == SamplingParams(seed=3)
