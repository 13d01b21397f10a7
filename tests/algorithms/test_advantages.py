"""Advantage estimators against values worked out by hand from each formula."""
import math
import statistics

import pytest
import torch

from rlvr.algorithms import ADVANTAGES, compute_advantages, group_advantages, register_advantage
from rlvr.registry import Registry

# two groups of G = 3: one with signal, one where every sample got the same reward
REWARDS = [1.0, 0.0, 0.0, 0.5, 0.5, 0.5]
G = 3
EPS = 1e-4


def _adv(name, rewards=REWARDS, **opts):
    adv, metrics = compute_advantages(name, torch.tensor(rewards, dtype=torch.float64), G, **opts)
    return adv.tolist(), metrics


def test_grpo_divides_by_unbiased_group_std():
    mean = 1 / 3
    std = math.sqrt(((1 - mean) ** 2 + 2 * mean**2) / 2)  # (G - 1) in the denominator
    expected = [(1 - mean) / (std + EPS), -mean / (std + EPS), -mean / (std + EPS), 0.0, 0.0, 0.0]
    adv, _ = _adv("grpo")
    assert adv == pytest.approx(expected, abs=1e-12)


def test_dr_grpo_only_subtracts_the_group_mean():
    adv, _ = _adv("dr_grpo")
    assert adv == pytest.approx([2 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0], abs=1e-12)


def test_rloo_baseline_is_the_mean_of_the_other_samples():
    rewards = [1.0, 0.0, 0.0, 3.0, 1.0, 2.0]
    expected = [
        1.0 - (0.0 + 0.0) / 2, 0.0 - (1.0 + 0.0) / 2, 0.0 - (1.0 + 0.0) / 2,
        3.0 - (1.0 + 2.0) / 2, 1.0 - (3.0 + 2.0) / 2, 2.0 - (3.0 + 1.0) / 2,
    ]
    adv, _ = _adv("rloo", rewards)
    assert adv == pytest.approx(expected, abs=1e-12)
    # the same as G/(G-1) (R - group mean)
    assert adv[3] == pytest.approx(G / (G - 1) * (3.0 - 2.0))


def test_grpo_batch_std_uses_group_mean_and_batch_std():
    rewards = [1.0, 0.0, 0.0, 3.0, 1.0, 2.0]
    batch_std = statistics.stdev(rewards)
    expected = [(1.0 - 1 / 3) / (batch_std + EPS), (-1 / 3) / (batch_std + EPS), (-1 / 3) / (batch_std + EPS),
                1.0 / (batch_std + EPS), -1.0 / (batch_std + EPS), 0.0]
    adv, _ = _adv("grpo_batch_std", rewards)
    assert adv == pytest.approx(expected, abs=1e-12)


def test_eps_option_changes_grpo_and_unknown_option_names_the_estimator():
    a, _ = _adv("grpo", eps=1.0)
    b, _ = _adv("grpo")
    assert a[0] < b[0]
    with pytest.raises(TypeError, match="dr_grpo"):
        _adv("dr_grpo", eps=1.0)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo", "grpo_batch_std"])
def test_metrics_and_zero_std_groups(name):
    adv, metrics = _adv(name)
    assert metrics["frac_reward_zero_std"] == 0.5  # second group: all 0.5
    assert adv[3:] == [0.0, 0.0, 0.0]  # no signal from an all-equal group, whatever the estimator
    assert metrics["reward/mean"] == pytest.approx(sum(REWARDS) / 6)
    assert metrics["reward/std"] == pytest.approx(statistics.stdev(REWARDS))
    assert metrics["advantage/abs_max"] == pytest.approx(max(abs(a) for a in adv))


def test_group_advantages_equals_compute_advantages():
    r = torch.rand(12)
    for name in ADVANTAGES.names():
        assert torch.equal(group_advantages(name, r, 4), compute_advantages(name, r, 4)[0])


def test_integer_rewards_are_accepted():
    adv, _ = compute_advantages("dr_grpo", torch.tensor([1, 0, 1, 0]), 2)
    assert adv.tolist() == [0.5, -0.5, 0.5, -0.5]


@pytest.mark.parametrize("rewards, g, match", [
    (torch.zeros(2, 3), 3, "1-D"),
    (torch.zeros(5), 2, "multiple of group_size"),
    (torch.zeros(4), 1, "group_size must be >= 2"),
])
def test_bad_shapes_raise(rewards, g, match):
    with pytest.raises(ValueError, match=match):
        compute_advantages("grpo", rewards, g)


def test_registry_rejects_duplicates_and_lists_valid_names():
    with pytest.raises(ValueError, match="already registered"):
        register_advantage("grpo")(lambda r: r)
    with pytest.raises(ValueError, match="valid: dr_grpo, grpo, grpo_batch_std, rloo"):
        compute_advantages("ppo", torch.zeros(4), 2)
    reg = Registry("thing")
    reg.register("a")(len)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        reg.register("a")(len)
