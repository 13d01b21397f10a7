"""The MLP's second half of the decode step in one launch: silu(gate) * up, then down_proj.

cuBLAS runs the down projection of a decode batch (few rows, K = intermediate size, the largest K
of the layer) as a split-K GEMM plus a separate reduction kernel, after the SiLU * up kernel: three
launches. Here the products of SiLU * up are formed tile by tile in the GEMM's prologue (the
activation never goes to memory), the K range is split over programs so the weight streams from
every SM, and the last program of each output tile to finish (a per-tile counter) sums the tile's
fp32 partial products in split order and writes the result: one launch, deterministic.

Rounding follows the torch ops it replaces: SiLU is rounded to the model dtype, then the product
with up, then the GEMM accumulates in fp32 and rounds once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl


@triton.jit
def _silu_down_kernel(gate_ptr, up_ptr, w_ptr, out_ptr, part_ptr, count_ptr, M, N, I, gate_stride, up_stride,
                      CHUNK, SPLITS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """Program (row tile, column tile, split): the fp32 product of the rows' silu(gate) * up over
    the K columns [split * CHUNK, (split + 1) * CHUNK) with W[cols, K]^T. With one split it is
    the output; else it goes to the scratch, and the tile's last program sums the splits."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    split = tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < M, cols < N
    rows64, cols64 = rows.to(tl.int64), cols.to(tl.int64)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    lo = split * CHUNK
    hi = tl.minimum(lo + CHUNK, I)
    for k0 in range(lo, hi, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        mask = row_ok[:, None] & (k < hi)[None, :]
        g = tl.load(gate_ptr + rows64[:, None] * gate_stride + k[None, :], mask=mask, other=0.0)
        u = tl.load(up_ptr + rows64[:, None] * up_stride + k[None, :], mask=mask, other=0.0).to(tl.float32)
        gf = g.to(tl.float32)
        act = (gf / (1.0 + tl.exp(-gf))).to(g.dtype).to(tl.float32)  # silu, rounded as torch's output
        a = (act * u).to(g.dtype)
        w = tl.load(w_ptr + cols64[None, :] * I + k[:, None], mask=(k < hi)[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(a, w, acc, input_precision=PRECISION)
    out_mask = row_ok[:, None] & col_ok[None, :]
    out_at = rows64[:, None] * N + cols64[None, :]
    if SPLITS == 1:
        tl.store(out_ptr + out_at, acc.to(out_ptr.dtype.element_ty), mask=out_mask)
    else:
        tile = pid_m * tl.num_programs(1) + pid_n
        tl.store(part_ptr + split * M * N + out_at, acc, mask=out_mask)
        tl.debug_barrier()  # every thread's partial is stored before the counter moves
        arrived = tl.atomic_add(count_ptr + tile, 1, sem="acq_rel")
        if arrived == SPLITS - 1:  # the last of the tile's programs: the others' partials are visible
            total = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for s in range(SPLITS):  # split order, whichever program came last: deterministic
                total += tl.load(part_ptr + s * M * N + out_at, mask=out_mask, other=0.0, cache_modifier=".cg")
            tl.store(out_ptr + out_at, total.to(out_ptr.dtype.element_ty), mask=out_mask)
            tl.atomic_xchg(count_ptr + tile, 0)  # ready for the next launch (a graph replays this one)


@dataclass(frozen=True)
class SiluDownTiling:
    """Launch shape of `silu_down`: BLOCK_M rows x BLOCK_N output columns per program, the K range
    split over `splits` programs (1: no reduction). `benchmarks/bench_silu_down.py` sweeps them."""

    block_m: int = 64
    block_n: int = 64
    block_k: int = 64
    splits: int = 4
    num_warps: int = 4
    num_stages: int = 3


def choose_tiling(m: int, n: int, i: int, sms: int) -> SiluDownTiling:
    """Enough programs to stream the weight from every SM: the K range split until row x column
    tiles x splits reach about one program per SM, each split keeping at least 256 K columns."""
    base = SiluDownTiling()
    tiles = triton.cdiv(m, base.block_m) * triton.cdiv(n, base.block_n)
    splits = max(1, min(16, round(sms / tiles), i // 256))
    return SiluDownTiling(splits=splits)


def fits(down_proj) -> bool:
    """A plain nn.Linear without bias (a LoRA layer's adapter would be skipped)."""
    return type(down_proj) is torch.nn.Linear and down_proj.bias is None


_COUNTERS: dict[tuple, torch.Tensor] = {}
"""Per (device, tiles): zeroed once; every launch leaves them at zero again."""


def _counters(device: torch.device, tiles: int) -> torch.Tensor:
    key = (str(device), tiles)
    if key not in _COUNTERS:
        _COUNTERS[key] = torch.zeros(tiles, dtype=torch.int32, device=device)
    return _COUNTERS[key]


def silu_down(gate: torch.Tensor, up: torch.Tensor, weight: torch.Tensor, tiling: SiluDownTiling) -> torch.Tensor:
    """F.linear(silu(gate) * up, weight) for gate, up (M, I) -- column slices of one (M, 2I)
    projection allowed -- and weight (N, I) without bias. One launch; returns (M, N)."""
    m, i = gate.shape
    n = weight.shape[0]
    assert gate.stride(1) == up.stride(1) == 1 and weight.is_contiguous() and weight.shape[1] == i
    t = tiling
    block_m = min(t.block_m, max(16, triton.next_power_of_2(m)))
    chunk = triton.cdiv(triton.cdiv(i, t.splits), t.block_k) * t.block_k
    splits = triton.cdiv(i, chunk)  # no empty split: each one's program must arrive at the counter
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, t.block_n), splits)
    out = torch.empty(m, n, dtype=gate.dtype, device=gate.device)
    part = torch.empty(splits, m, n, dtype=torch.float32, device=gate.device) if splits > 1 else out  # fp32 partials
    counters = _counters(gate.device, grid[0] * grid[1])
    precision = "ieee" if gate.dtype == torch.float32 else "tf32"
    _silu_down_kernel[grid](gate, up, weight, out, part, counters, m, n, i, gate.stride(0), up.stride(0), chunk,
                            SPLITS=splits, BLOCK_M=block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k,
                            PRECISION=precision, num_warps=t.num_warps, num_stages=t.num_stages)
    return out
