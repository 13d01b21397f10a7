"""Every stage and command that samples picks its engine as GRPO does: `auto` is the fast engine on
CUDA when the model fits, transformers `generate` otherwise; a policy builds each engine once."""
from __future__ import annotations

import pytest
import torch

from rlvr.models import ModelConfig, load_policy
from rlvr.rollout import SamplingParams, check_engine_name, choose_engine

TINY = dict(name_or_path="tiny")


def _policy(device="cpu", train=False):
    from rlvr.config import from_dict

    cfg = from_dict(ModelConfig, {**TINY, "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 2,
                                                   "intermediate_size": 64, "max_position_embeddings": 96}})
    return load_policy(cfg, device=device, train=train)


def test_auto_is_hf_on_the_cpu_and_names_are_checked():
    policy = _policy()
    assert choose_engine("auto", policy.model) == "hf"
    assert choose_engine("hf", policy.model) == "hf"
    with pytest.raises(ValueError, match="valid: auto, fast, hf"):
        check_engine_name("vllm")


def test_a_policy_builds_each_engine_once():
    policy = _policy()
    assert policy.engine("auto") is policy.engine("hf")


def test_eval_stage_options_reject_an_unknown_engine():
    from rlvr.config import ConfigError, from_dict
    from rlvr.pipeline.stages.eval import EvalStageConfig

    with pytest.raises(ConfigError, match="stages.3.engine.name: unknown rollout engine 'fastt'"):
        from_dict(EvalStageConfig, {"engine": "fastt"}, "stages.3")


@pytest.mark.gpu
def test_on_cuda_eval_samples_with_the_fast_engine_and_matches_generate_greedily():
    from rlvr.pipeline.sampling import sample_and_verify
    from rlvr.tasks import make_task

    policy = _policy("cuda", train=True)  # fp32 weights: greedy tokens must agree exactly
    assert choose_engine("auto", policy.model) == "fast"
    examples = make_task("arithmetic", seed=0, difficulty=1).held_out(16)
    greedy = SamplingParams(max_new_tokens=24, temperature=0.0)
    fast = sample_and_verify(policy, examples, "plain", 1, greedy, 16, engine="auto")
    hf = sample_and_verify(policy, examples, "plain", 1, greedy, 16, engine="hf")
    assert type(policy.engine("auto")).__name__ == "FastEngine"
    assert [g[0].text for g in fast] == [g[0].text for g in hf]
    torch.cuda.synchronize()


def test_make_engine_passes_the_fast_engine_options_from_the_config():
    from rlvr.rollout import EngineConfig, make_engine
    from rlvr.rollout.fast import FastEngine

    policy = _policy()
    engine = make_engine(EngineConfig(name="fast", kernels="torch", max_graphs=1, length_bucket=16, compact=False),
                         policy.model, policy.tokenizer)
    assert isinstance(engine, FastEngine) and not engine.fused
    assert (engine.config.max_graphs, engine.config.length_bucket, engine.config.compact) == (1, 16, False)
    params = SamplingParams(max_new_tokens=4, temperature=0.0)
    engine.generate([[5, 6, 7]], 1, params)
    engine.generate([[5, 6]], 2, params)
    assert len(engine._states) == 1  # max_graphs=1 reached the engine: the older state was dropped
    assert choose_engine(EngineConfig(name="auto", kernels="torch"), policy.model) == "hf"


def test_a_policy_builds_one_engine_per_set_of_options():
    from rlvr.rollout import EngineConfig

    policy = _policy()
    one = policy.engine(EngineConfig(name="fast", kernels="torch"))
    assert policy.engine(EngineConfig(name="fast", kernels="torch")) is one
    assert policy.engine(EngineConfig(name="fast", kernels="torch", max_graphs=1)) is not one
    assert policy.engine("auto") is policy.engine("hf") is not one


def test_the_cli_engine_flag_takes_a_name_or_the_recipe_mapping():
    import argparse

    from rlvr.rollout import EngineConfig
    from rlvr.cli_setup import add_model_arguments

    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    assert parser.parse_args([]).engine == EngineConfig()
    assert parser.parse_args(["--engine", "hf"]).engine == EngineConfig(name="hf")
    assert parser.parse_args(["--engine", "{name: fast, kernels: torch}"]).engine == \
        EngineConfig(name="fast", kernels="torch")
    with pytest.raises(SystemExit):
        parser.parse_args(["--engine", "{name: fast, kernel: torch}"])
