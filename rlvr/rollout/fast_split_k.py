"""How the split-K Triton GEMM (`fast_kernels.linear_partials`) divides its work.

A decode step's o_proj and down_proj have few output columns (the hidden size) and, for
down_proj, a long input: at rollout batch sizes their output tiles are fewer than the GPU's SMs,
so each tile's K dimension is split into chunks computed by separate programs. The chunks' fp32
partial sums are added up by the residual add + RMSNorm that follows, so the reduction costs no
launch of its own. Triton-free: the engine and the CPU tests ask without importing the kernels.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SplitK:
    """Launch shape of `linear_partials`: the K dimension in `parts` chunks (whole BLOCK_Ks, so
    fewer when K is short), output tiles of BLOCK_N columns and `split_k_block_m` rows."""

    parts: int
    block_n: int = 64
    block_k: int = 128
    num_warps: int = 4
    num_stages: int = 3


PROGRAMS_PER_SM = 2
"""Programs `split_k_plan` aims at per SM: enough weight loads in flight to stream the weights."""


def split_k_block_m(m: int) -> int:
    """Rows of an output tile: all m rows up to 64 (a power of two, at least 16: tl.dot's minimum)."""
    return min(64, max(16, 1 << (m - 1).bit_length()))


def split_k_plan(m: int, n: int, k: int, sm_count: int, block_n: int = 64, block_k: int = 128) -> SplitK:
    """A SplitK for x (m, k) @ W (n, k)^T: as many K chunks as bring the output tiles to
    PROGRAMS_PER_SM programs per SM, each chunk at least one BLOCK_K."""
    tiles = -(-n // block_n) * -(-m // split_k_block_m(m))
    parts = max(1, min(-(-PROGRAMS_PER_SM * sm_count // tiles), -(-k // block_k)))
    return SplitK(parts, block_n, block_k)
