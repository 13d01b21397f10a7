"""The static tensors one captured decode step reads and writes (the CUDA graph bakes in their
addresses), and compaction: moving the unfinished rows to the front, so that a step over a
prefix of the rows (its own graph) skips the finished ones.

Per-row tensors have the row on dim 0, so a prefix of rows is a contiguous view of the same
storage: graphs of every batch size share one KV cache.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

from rlvr.rollout.tokens import host_to_device

if TYPE_CHECKING:
    from rlvr.rollout.fast_forward import ModelParts


class DecodeState:
    """Static tensors of one captured decode step (their addresses are baked into the graph)."""

    def __init__(self, parts: ModelParts, n: int, length: int, max_new: int, dtype, device, stop_ids: list[int],
                 pad_id: int, forced: bool = False):
        shape = (n, parts.kv_heads, length, parts.head_dim)
        # zeros, not empty: masked columns get probability 0, and 0 * NaN garbage would be NaN
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in parts.layers]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in parts.layers]
        # additive attention mask (N, kv, 1, S) in the model dtype: 0 visible, -inf not (yet)
        self.bias = torch.full((n, parts.kv_heads, 1, length), float("-inf"), dtype=dtype, device=device)
        self.tokens = torch.zeros(n, dtype=torch.long, device=device)  # last sampled token
        self.pos = torch.zeros(n, dtype=torch.long, device=device)  # its position id
        # the step's scalars share one tensor: one launch advances them all
        self.counters = torch.zeros(3, dtype=torch.long, device=device)
        self.col = self.counters[0:1]  # the cache column of the last sampled token
        self.step = self.counters[1:2]  # output column
        self.seed = self.counters[2:3]  # the fused sampler's RNG seed, +1 per step
        self.finished = torch.zeros(n, dtype=torch.bool, device=device)
        self.out_tokens = torch.zeros(n, max_new, dtype=torch.long, device=device)
        self.out_logp = torch.zeros(n, max_new, dtype=torch.float32, device=device)
        self.stop_ids = torch.tensor(stop_ids, dtype=torch.long, device=device)
        self.pad_id = pad_id
        self.start = torch.zeros(n, dtype=torch.long, device=device)  # first non-padding column
        self.forced = forced  # the step forces EOS at each row's `end_at` completion length
        self.end_at = torch.zeros(n, dtype=torch.long, device=device)
        self.force_id = stop_ids[0] if stop_ids else pad_id
        self.n = n
        self.length = length  # cache columns S
        self.width = 0  # prompt width of the current batch (set by the prefill)
        self.order = list(range(n))  # original row of each slot (compaction permutes the slots)
        self.offset = [0] * n  # output column where each slot's completion starts (refill: later)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}  # captured step per batch size (prefix rows)

    RECORD = ("finished", "out_tokens", "out_logp")
    """Per-row outputs: kept for every row, finished or not."""
    LIVE = ("tokens", "pos", "start", "end_at", "bias")
    """Per-row inputs of the next step (with the KV cache): needed for unfinished rows only."""

    @property
    def graph(self) -> torch.cuda.CUDAGraph | None:
        """The captured step over all rows."""
        return self.graphs.get(self.n)

    def view(self, rows: int) -> "DecodeState":
        """The first `rows` rows: the same storage, the scalars (counters) shared."""
        if rows == self.n:
            return self
        part = copy.copy(self)
        for name in self.RECORD + self.LIVE:
            setattr(part, name, getattr(self, name)[:rows])
        part.k, part.v = [c[:rows] for c in self.k], [c[:rows] for c in self.v]
        part.n = rows
        return part

    def reset_order(self) -> None:
        self.order = list(range(self.n))
        self.offset = [0] * self.n

    def compact(self, alive: list[int], rows: int, cols: int) -> "DecodeState":
        """Move the unfinished slots `alive` (ascending) to the front, keep every row's outputs, and
        return the view of the first `rows` (>= len(alive)) slots; `cols`: cache columns written."""
        taken = set(alive)
        perm = alive + [i for i in range(self.n) if i not in taken]  # finished rows after the live ones
        self.order = [self.order[i] for i in perm]
        self.offset = [self.offset[i] for i in perm]
        device = self.tokens.device
        perm_t = host_to_device(perm, device)  # no stream sync: refill's checks run ahead of the GPU
        for name in self.RECORD:
            t = getattr(self, name)
            t.copy_(t[perm_t])
        live, a = perm_t[: len(alive)], len(alive)
        for name in self.LIVE:
            t = getattr(self, name)
            t[:a] = t[live]
        for cache in self.k + self.v:  # only the columns written so far
            cache[:a, :, :cols] = cache[:, :, :cols].index_select(0, live)
        return self.view(rows)

    def rebuild_bias(self) -> None:
        """The torch path's mask from `start` and `col` (the Triton path keeps only those): needed
        when a fallback to torch ops happens mid-generation."""
        cols = torch.arange(self.bias.shape[-1], device=self.bias.device)
        visible = (cols[None, :] >= self.start[:, None]) & (cols[None, :] < self.col)  # (N, S)
        self.bias.copy_(torch.where(visible, 0.0, float("-inf"))[:, None, None, :].expand_as(self.bias))

    def snapshot(self) -> list[torch.Tensor]:
        """What a warm-up step overwrites, besides the cache column the next real step rewrites."""
        return [t.clone() for t in self._stepped()]

    def restore(self, saved: list[torch.Tensor]) -> None:
        for t, old in zip(self._stepped(), saved):
            t.copy_(old)

    def _stepped(self) -> list[torch.Tensor]:
        return [self.counters, self.tokens, self.pos, self.finished, self.out_tokens, self.out_logp]
