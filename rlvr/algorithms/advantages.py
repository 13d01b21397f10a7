"""Group-relative advantage estimators: rewards (N,) of B groups of G samples -> advantages (N,).

Sequence i belongs to group i // G (a group's samples are contiguous, as the rollout lays them
out). Every estimator takes the rewards reshaped to (B, G) plus keyword options and returns
(B, G) advantages; `compute_advantages` adds the metrics shared by all of them.
"""
from __future__ import annotations

from typing import Callable

import torch

from rlvr.registry import Registry

AdvantageFn = Callable[..., torch.Tensor]
ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")


def register_advantage(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: register f(rewards (B, G), **options) -> advantages (B, G) under `name`."""
    return ADVANTAGES.register(name)


@register_advantage("grpo")
def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """A_i = (R_i - mean_g R) / (std_g R + eps), std unbiased (GRPO, arXiv 2402.03300)."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)  # unbiased (G-1), as TRL and verl
    return (rewards - mean) / (std + eps)


@register_advantage("dr_grpo")
def dr_grpo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """A_i = R_i - mean_g R: no std division, which biases toward easy/hard groups (Dr. GRPO, arXiv 2503.20783)."""
    return rewards - rewards.mean(dim=1, keepdim=True)


@register_advantage("rloo")
def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """A_i = R_i - (1/(G-1)) sum_{j!=i} R_j = G/(G-1) (R_i - mean_g R) (RLOO, arXiv 2402.14740).

    The leave-one-out baseline does not depend on R_i, so the estimate stays unbiased.
    """
    g = rewards.shape[1]
    others_mean = (rewards.sum(dim=1, keepdim=True) - rewards) / (g - 1)
    return rewards - others_mean


@register_advantage("grpo_batch_std")
def grpo_batch_std_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """A_i = (R_i - mean_g R) / (std_batch R + eps) (TRL scale_rewards="batch"; arXiv 2508.08221).

    The std is over every reward passed in: pass the rewards of the whole (gathered) batch
    to get the global std.
    """
    return (rewards - rewards.mean(dim=1, keepdim=True)) / (rewards.std() + eps)


def compute_advantages(
    name: str, rewards: torch.Tensor, group_size: int, **options
) -> tuple[torch.Tensor, dict[str, float]]:
    """Advantages (N,) for rewards (N,) in groups of `group_size`, and their metrics.

    Metrics: `frac_reward_zero_std` (groups whose rewards are all equal: zero advantage, no
    signal), `reward/mean`, `reward/std`, `advantage/mean`, `advantage/std`, `advantage/abs_max`.
    """
    grouped = _grouped(rewards, group_size)
    adv = _estimate(name, grouped, options)
    return adv.reshape(-1), _advantage_metrics(grouped, adv)


def group_advantages(name: str, rewards: torch.Tensor, group_size: int, **options) -> torch.Tensor:
    """Advantages (N,) only: no metrics, so no host sync (the fused path's entry)."""
    return _estimate(name, _grouped(rewards, group_size), options).reshape(-1)


def _estimate(name: str, grouped: torch.Tensor, options: dict) -> torch.Tensor:
    fn = ADVANTAGES.get(name)
    try:
        return fn(grouped, **options)
    except TypeError as e:  # an option this estimator does not take
        raise TypeError(f"advantage estimator {name!r}: {e}") from e


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    check_group_rewards(rewards, group_size)
    if not rewards.is_floating_point():
        rewards = rewards.float()
    return rewards.reshape(-1, group_size)  # (B, G)


def check_group_rewards(rewards: torch.Tensor, group_size: int) -> None:
    """Rewards (N,) that split into whole groups of `group_size` >= 2 (every estimator's input)."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 for a group baseline, got {group_size}")
    if rewards.numel() == 0 or rewards.numel() % group_size:
        raise ValueError(f"rewards length {rewards.numel()} is not a positive multiple of group_size {group_size}")


def _advantage_metrics(grouped: torch.Tensor, adv: torch.Tensor) -> dict[str, float]:
    zero_std = grouped.amax(dim=1) == grouped.amin(dim=1)  # exact: all rewards equal
    stats = torch.stack([
        zero_std.float().mean(),
        grouped.mean(),
        grouped.std() if grouped.numel() > 1 else grouped.new_zeros(()),
        adv.mean(),
        adv.std(),
        adv.abs().max(),
    ])
    keys = ["frac_reward_zero_std", "reward/mean", "reward/std",
            "advantage/mean", "advantage/std", "advantage/abs_max"]
    # one host sync for all metrics
    return dict(zip(keys, stats.tolist()))
