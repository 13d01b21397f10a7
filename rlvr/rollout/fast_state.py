"""The static tensors one captured decode step reads and writes (the CUDA graph bakes in their
addresses)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

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
        self.graph: torch.cuda.CUDAGraph | None = None
