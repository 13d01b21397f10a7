"""Frozen copies of a policy, for generation and as a KL reference.

`frozen_copy` shares what never changes (frozen parameters already in the copy's dtype), so a LoRA
policy's copy is not a second base model. `pack_sibling_linears` lays a copy's sibling projections
out as consecutive rows of one buffer: the fast engine runs q/k/v as one GEMM and gate/up as another
on stacked weights (`rlvr.rollout.fast_stacked`), and where the weights already are rows of one
buffer the stacks are views of it, with no second copy of two thirds of the model and nothing to
refresh before a generate.
"""
from __future__ import annotations

import copy

import torch


def frozen_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A frozen eval-mode copy whose floating parameters are `dtype`. Buffers keep their dtype
    (RoPE's inv_freq stays float32, as when a model is loaded in bfloat16). Parameters that are
    frozen and already `dtype` are shared, not copied: a LoRA policy's copy holds its adapters
    alone, not a second base model."""
    shared = {id(p): p for p in model.parameters() if not p.requires_grad and p.dtype == dtype}
    clone = copy.deepcopy(model, memo=dict(shared)).eval()
    # accelerate's prepare wraps forward in autocast (an instance attribute): the copy computes
    # in its own dtype, so it gets the class forward back
    if "_original_forward" in clone.__dict__:
        del clone.__dict__["_original_forward"]
        clone.__dict__.pop("forward", None)
    for p in clone.parameters():
        if id(p) in shared:
            continue
        p.requires_grad_(False)
        if p.is_floating_point():
            p.data = p.data.to(dtype)
    return clone


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
