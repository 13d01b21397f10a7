"""The trainer builds the policy-loss settings once (`GRPOConfig.policy_loss`) and passes them to the
fused loss as one `PolicyLossConfig`; configs use TRL's clip names only (epsilon, epsilon_high)."""
import pytest
import torch

import rlvr.kernels
from rlvr.algorithms import PolicyLossConfig
from rlvr.config import ConfigError, from_dict
from rlvr.kernels import reference
from rlvr.trainer import GRPOConfig, run_grpo

from grpo_fixtures import SevensTask, small_config, tiny_policy


def test_policy_loss_maps_the_trl_names():
    cfg = from_dict(GRPOConfig, {"epsilon": 0.1, "epsilon_high": 0.28, "beta": 0.04, "kl_type": "k2",
                                 "max_new_tokens": 33})
    assert cfg.policy_loss() == PolicyLossConfig(epsilon_low=0.1, epsilon_high=0.28, beta=0.04, kl_type="k2",
                                                 max_completion_length=33)
    assert GRPOConfig(epsilon=0.3).policy_loss().epsilon_high == 0.3  # epsilon_high None: symmetric


@pytest.mark.parametrize("old,new", [("epsilon_low", "epsilon"), ("clip_high", "epsilon_high")])
def test_other_clip_names_are_refused_with_the_new_name(old, new):
    with pytest.raises(ConfigError, match=f"stages.2.{old}: renamed to {new} "):
        from_dict(GRPOConfig, {old: 0.2}, "stages.2")


def test_epsilon_is_checked_when_the_config_is_built():
    with pytest.raises(ConfigError, match=r"stages.2: epsilon must be in \[0, 1\), got 1.5"):
        from_dict(GRPOConfig, {"epsilon": 1.5}, "stages.2")


def test_config_and_loose_keywords_give_the_same_loss_and_not_both():
    g = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(2, 3, 4, generator=g), torch.randn(7, 4, generator=g)
    targets, mask, adv = torch.randint(0, 7, (2, 3), generator=g), torch.ones(2, 3), torch.randn(2, generator=g)
    old = torch.randn(2, 3, generator=g) - 2
    cfg = PolicyLossConfig(epsilon_low=0.05, epsilon_high=0.1)
    a, _ = reference.fused_policy_loss(hidden, weight, targets, mask, adv, old, loss_type="grpo", config=cfg)
    b, _ = reference.fused_policy_loss(hidden, weight, targets, mask, adv, old, loss_type="grpo",
                                       epsilon_low=0.05, epsilon_high=0.1)
    c, _ = reference.fused_policy_loss(hidden, weight, targets, mask, adv, old, loss_type="grpo")
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(TypeError, match="not both"):
        reference.fused_policy_loss(hidden, weight, targets, mask, adv, loss_type="grpo", config=cfg, beta=0.1)


def test_the_trainer_passes_one_config_built_once(tmp_path, monkeypatch):
    seen = []
    real = rlvr.kernels.fused_policy_loss

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(rlvr.kernels, "fused_policy_loss", spy)
    cfg = small_config(steps=2, epsilon=0.1, epsilon_high=0.3, loss_type="dr_grpo")
    run_grpo(tiny_policy(), SevensTask(), cfg, tmp_path)
    assert len(seen) == 2 and seen[0]["config"] is seen[1]["config"]  # the same object every update
    assert seen[0]["config"] == cfg.policy_loss()
    assert set(seen[0]) == {"loss_type", "config", "normalizer", "backend"}
