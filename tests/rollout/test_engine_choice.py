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

    with pytest.raises(ConfigError, match="stages.3.engine: unknown rollout engine 'fastt'"):
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
