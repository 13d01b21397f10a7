"""Group-normalised advantages on CUDA in one Triton launch: rewards (N,) -> advantages (N,).
Divisions are IEEE-rounded (div_rn; Triton's `/` is approximate), so results match torch's.

Same estimators and signature as `rlvr.algorithms.advantages.group_advantages` (the torch
reference): sequence i belongs to group i // G. One program handles BLOCK_B groups as a
(BLOCK_B, G) tile, so the whole batch is one launch with no host sync.
  grpo:    A = (R - mean_g R) / (std_g R + eps), std unbiased (G - 1)
  dr_grpo: A = R - mean_g R
  rloo:    A = R - (sum_g R - R) / (G - 1)
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from rlvr.algorithms.advantages import check_group_rewards

KINDS = {"grpo": 0, "dr_grpo": 1, "rloo": 2}
"""Estimators this kernel computes, and the constexpr code each compiles to."""


@triton.jit
def _group_advantages_kernel(rewards_ptr, out_ptr, num_groups, G, eps,
                             KIND: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_G: tl.constexpr):
    groups = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)  # (BLOCK_B,)
    members = tl.arange(0, BLOCK_G)  # (BLOCK_G,)
    valid = (groups[:, None] < num_groups) & (members[None, :] < G)
    offsets = groups[:, None] * G + members[None, :]
    r = tl.load(rewards_ptr + offsets, mask=valid, other=0.0).to(tl.float32)
    total = tl.sum(r, axis=1)  # (BLOCK_B,)
    mean = tl.math.div_rn(total, G * 1.0)  # IEEE division: an all-equal group gives exactly 0
    if KIND == 0:
        centred = tl.where(valid, r - mean[:, None], 0.0)
        std = tl.sqrt_rn(tl.math.div_rn(tl.sum(centred * centred, axis=1), G - 1.0))
        adv = tl.math.div_rn(centred, std[:, None] + eps)
    elif KIND == 1:
        adv = r - mean[:, None]
    else:
        adv = r - tl.math.div_rn(total[:, None] - r, G - 1.0)
    tl.store(out_ptr + offsets, adv, mask=valid)


def group_advantages(name: str, rewards: torch.Tensor, group_size: int, *, eps: float = 1e-4) -> torch.Tensor:
    """Advantages (N,) fp32 of rewards (N,) in contiguous groups of `group_size` (CUDA tensors).

    eps is used by grpo only (as in the reference); other estimators take no option.
    """
    if name not in KINDS:
        raise ValueError(f"unknown advantage estimator {name!r} for the triton path; valid: {', '.join(sorted(KINDS))}")
    check_group_rewards(rewards, group_size)
    if not rewards.is_cuda:
        raise ValueError("the triton path needs a CUDA tensor; use rlvr.algorithms.group_advantages on the CPU")
    rewards = rewards.float().contiguous()
    out = torch.empty_like(rewards)
    num_groups = rewards.numel() // group_size
    block_g = triton.next_power_of_2(group_size)
    block_b = max(1, min(64, 4096 // block_g))
    grid = (triton.cdiv(num_groups, block_b),)
    _group_advantages_kernel[grid](rewards, out, num_groups, group_size, eps,
                                   KIND=KINDS[name], BLOCK_B=block_b, BLOCK_G=block_g)
    return out
