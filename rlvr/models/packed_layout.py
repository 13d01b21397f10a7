"""Sibling projections of a generation copy laid out as consecutive rows of one buffer.

The fast engine runs q/k/v as one GEMM and gate/up as another on stacked weights
(`rlvr.rollout.fast_stacked`). For weights it does not own, the stacks are copies refreshed before
every generate; when the weights already are consecutive rows of one buffer, the stacks are views
of it: no second copy of two thirds of the model, nothing to refresh. A generation copy (the
bf16-mixed copy, a LoRA policy's merged copy) is rlvr's own, so it can be laid out that way.
"""
from __future__ import annotations

import torch


def pack_sibling_linears(model: torch.nn.Module, owned: set[int]) -> None:
    """For every module, re-seat the weights of its nn.Linear children that share input width,
    dtype and device (q/k/v/o, gate/up) as consecutive rows of one new buffer, in registration
    order, values unchanged. Only parameters whose id is in `owned` move: a weight shared with the
    policy is never touched."""
    for parent in model.modules():
        groups: dict[tuple, list[torch.nn.Linear]] = {}
        for child in parent.children():
            weight = getattr(child, "weight", None)
            if type(child) is torch.nn.Linear and id(weight) in owned:
                groups.setdefault((weight.shape[1], weight.dtype, weight.device), []).append(child)
        for linears in groups.values():
            if len(linears) < 2:
                continue
            buffer = torch.cat([linear.weight.detach() for linear in linears])
            for linear, rows in zip(linears, buffer.split([linear.weight.shape[0] for linear in linears])):
                linear.weight.data = rows
