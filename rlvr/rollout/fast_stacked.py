"""Stacked copies of each layer's q/k/v and gate/up weights, for the Triton decode path: one GEMM
launch instead of three and two (the decode step is launch-bound)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from rlvr.rollout.fast_forward import ModelParts


class StackedProjections:
    """Per layer, copies of the q/k/v weights (and biases) stacked into one matrix and of gate/up
    into another. Being copies, they are refreshed (`refresh`) at the start of every generate, so
    optimizer steps are seen; they cost the memory of those weights
    (about 2/3 of a Qwen2/Llama model's non-embedding weights), except where the weights already
    are consecutive rows of one buffer (a generation copy, `rlvr.models.copies.pack_sibling_linears`):
    those stacks are views. Only for plain nn.Linear projections: a LoRA layer's adapter would be
    skipped (see `fits`)."""

    def __init__(self, parts: ModelParts):
        self.parts = parts
        self.q_size, self.kv_size = parts.heads * parts.head_dim, parts.kv_heads * parts.head_dim
        # per layer [qkv weight, qkv bias (None without), gate/up weight]
        self.stacks = [[None if group is None else _stack(group) for group in self._sources(layer)]
                       for layer in parts.layers]

    @staticmethod
    def _sources(layer) -> tuple:
        """The parameters each stack is made of (None: the model has no q/k/v bias)."""
        qkv = (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)
        return ([m.weight for m in qkv], None if qkv[0].bias is None else [m.bias for m in qkv],
                [layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight])

    @staticmethod
    def fits(parts: ModelParts) -> bool:
        """Plain nn.Linear q/k/v/gate/up, q/k/v bias all or none, no gate/up bias."""
        for layer in parts.layers:
            attn, mlp = layer.self_attn, layer.mlp
            qkv = (attn.q_proj, attn.k_proj, attn.v_proj)
            if not all(type(m) is torch.nn.Linear for m in (*qkv, mlp.gate_proj, mlp.up_proj)):
                return False
            if len({m.bias is None for m in qkv}) != 1 or mlp.gate_proj.bias is not None or mlp.up_proj.bias is not None:
                return False
        return True

    @torch.no_grad()
    def refresh(self) -> None:
        for layer, stacks in zip(self.parts.layers, self.stacks):
            for group, stack in zip(self._sources(layer), stacks):
                if group is not None and not _same_memory(stack, group[0]):  # a view is never stale
                    torch.cat(group, out=stack)

    def qkv(self, i: int, h: torch.Tensor):
        """q (N, heads*D), k, v (N, kv*D): column slices of one GEMM's output."""
        weight, bias, _ = self.stacks[i]
        return F.linear(h, weight, bias).split([self.q_size, self.kv_size, self.kv_size], dim=1)

    def gate_up(self, i: int, h: torch.Tensor):
        return F.linear(h, self.stacks[i][2]).chunk(2, dim=1)


def _stack(group: list[torch.Tensor]) -> torch.Tensor:
    view = _rows_of_one_buffer(group)
    return torch.cat(group).detach() if view is None else view


def _rows_of_one_buffer(group: list[torch.Tensor]) -> torch.Tensor | None:
    """The stack `group` already is, as a view, when its tensors are consecutive rows of one
    contiguous buffer (how a generation copy lays out a module's projections): no copy to hold
    or refresh. None otherwise."""
    first = group[0]
    offset = first.storage_offset()
    for t in group:
        if not (t.is_contiguous() and _same_memory(t, first) and t.storage_offset() == offset
                and t.shape[1:] == first.shape[1:] and t.dtype == first.dtype):
            return None
        offset += t.numel()
    rows = sum(t.shape[0] for t in group)
    return first.detach().new_empty(0).set_(first.untyped_storage(), first.storage_offset(), (rows, *first.shape[1:]))


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
