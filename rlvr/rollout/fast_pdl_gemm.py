"""The decode step's projections as Triton GEMMs that fetch their weights before the kernel ahead of
them has finished (programmatic dependent launch, Hopper and later).

At rollout sizes (tens to hundreds of rows) a decode-step GEMM reads 1-55 MB of weight and does
little arithmetic: cuBLAS's kernels spend much of their few microseconds waiting for the first bytes
from HBM, and no kernel of the step can start before the one ahead of it ends. With programmatic
dependent launch a kernel is scheduled while the one ahead still runs (once that one has called
`griddepcontrol.launch_dependents`) and holds at `griddepcontrol.wait` until it has finished and its
writes are visible. The weights do not depend on the activations, so each GEMM here first asks L2
for its own weight rows (a bulk prefetch per lane, which the copy engine runs), then waits, then
computes: the weight's trip from HBM overlaps the kernel ahead. Only read-only weights are touched
before the wait, so the result is the same as with ordinary launches.

Every kernel of the chain takes part (`pdl_enter`): it waits first, then lets the next kernel be
scheduled, so at most one grid waits ahead of the running one. A kernel launched without PDL runs
the same code (the two instructions are then no-ops).

  linear         x (M, K) @ W (N, K)^T [+ bias] -> (M, N), as F.linear
  gate_up_silu   silu(x @ W_gate^T) * (x @ W_up^T) from the stacked (2I, K) gate/up weight: the
                 MLP's first half in one launch, rounded where the torch ops round

Program (j, i, s): output columns j*BLOCK_N.. (weight rows, read once from HBM by the i = 0
programs' prefetch, from L2 by the rest) over rows i*BLOCK_M.., K range s of the split reduction
(the tile's last program sums the splits' fp32 partials in split order: deterministic). The launch
shape (`GemmTiling`) defaults to about one program per SM (`default_tiling`);
`benchmarks/bench_pdl_gemms.py` sweeps it on the GPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

PREFETCH_BUDGET = 24 << 20
"""Bytes of weight one GEMM asks L2 for at most (H100/H200 L2: 50 MB): a larger weight (the 1.5B
model's gate/up, 55 MB) has the first part of each program's rows prefetched, the rest streams."""


# ----------------------------------------------------------------------------- taking part in PDL

@triton.jit
def pdl_enter(PDL: tl.constexpr):
    """Wait until the kernel ahead has finished (its writes visible), then let the next kernel be
    scheduled. Call before the first read of anything an earlier kernel writes."""
    if PDL:
        tl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=tl.int32, is_pure=False, pack=1)
        tl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [], dtype=tl.int32,
                                  is_pure=False, pack=1)


def pdl_launch(pdl: bool) -> dict:
    """The PDL constexpr and launch option of a kernel that calls `pdl_enter(PDL)`."""
    return dict(PDL=pdl, **({"launch_pdl": True} if pdl else {}))


def pdl_supported(device: torch.device) -> bool:
    """Programmatic dependent launch and the bulk L2 prefetch need sm_90 (Hopper) or later, and the
    compiled kernels (the CPU interpreter runs no inline PTX)."""
    if device.type != "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


_PREFETCH_ASM = tl.constexpr("{ .reg .pred p; setp.ne.s32 p, $2, 0; "
                             "@p cp.async.bulk.prefetch.L2.global [$1], $2; } // $0")
"""One bulk prefetch into L2 of $2 bytes at $1 (skipped when 0): sm_90, 16-byte aligned, multiples of 16."""


@triton.jit
def prefetch_span_l2(ptr, nbytes, LANES: tl.constexpr):
    """Ask L2 for the `nbytes` bytes at ptr (16-byte aligned, a multiple of 16; <= 0: nothing), one
    bulk prefetch per lane, which the copy engine runs while the program goes on."""
    chunk = tl.cdiv(tl.cdiv(tl.maximum(nbytes, 0), LANES), 16) * 16
    first = tl.arange(0, LANES).to(tl.int64) * chunk
    size = tl.minimum(tl.maximum(nbytes - first, 0), chunk).to(tl.int32)
    tl.inline_asm_elementwise(_PREFETCH_ASM, "=r,l,r", [ptr.to(tl.pointer_type(tl.uint8)) + first, size],
                              dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _prefetch_rows_l2(ptr, row0, rows_ok, K, lo, seg_bytes, BLOCK_N: tl.constexpr, LANES: tl.constexpr):
    """Ask L2 for columns lo.. (seg_bytes bytes) of the weight rows row0..row0 + BLOCK_N - 1 at ptr
    (2-byte elements; rows past `rows_ok` skipped): one bulk prefetch per lane
    (`cp.async.bulk.prefetch.L2`, sm_90; 16-byte aligned, multiples of 16 bytes), which the copy
    engine runs while the program goes on. LANES // BLOCK_N lanes share a row."""
    PER_ROW: tl.constexpr = LANES // BLOCK_N
    lane = tl.arange(0, LANES)
    row, part = lane // PER_ROW, lane % PER_ROW
    chunk = tl.cdiv(tl.cdiv(seg_bytes, PER_ROW), 16) * 16
    first = ((row0 + row).to(tl.int64) * K + lo) * 2 + part * chunk
    size = tl.minimum(tl.maximum(seg_bytes - part * chunk, 0), chunk)
    size = tl.where(row < rows_ok, size, 0).to(tl.int32)
    tl.inline_asm_elementwise(_PREFETCH_ASM, "=r,l,r", [ptr.to(tl.pointer_type(tl.uint8)) + first, size],
                              dtype=tl.int32, is_pure=False, pack=1)


# ----------------------------------------------------------------------------- the GEMM

@triton.jit
def _product(x_ptr, w_ptr, x_rows, w_rows, row_ok, col_ok, lo, hi, up_offset, BLOCK_M: tl.constexpr,
             BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr, SILU_PAIR: tl.constexpr):
    """fp32 x[rows, lo:hi] @ W[cols, lo:hi]^T, and with SILU_PAIR the same with the up rows
    (W + up_offset); (BLOCK_M, BLOCK_N) each."""
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    acc_up = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(lo, hi, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < hi
        a = tl.load(x_ptr + x_rows + k[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w_mask = col_ok[:, None] & k_ok[None, :]
        w = tl.load(w_ptr + w_rows + k[None, :], mask=w_mask, other=0.0)
        acc = tl.dot(a, tl.trans(w), acc, input_precision=PRECISION)
        if SILU_PAIR:
            w_up = tl.load(w_ptr + up_offset + w_rows + k[None, :], mask=w_mask, other=0.0)
            acc_up = tl.dot(a, tl.trans(w_up), acc_up, input_precision=PRECISION)
    return acc, acc_up


@triton.jit
def _linear_kernel(x_ptr, w_ptr, b_ptr, out_ptr, part_ptr, count_ptr, M, N, K, x_stride, CHUNK, prefetch_row_bytes,
                   HAS_BIAS: tl.constexpr, SILU_PAIR: tl.constexpr, SPLITS: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr, PREFETCH: tl.constexpr,
                   LANES: tl.constexpr, PDL: tl.constexpr):
    """Program (column tile, row tile, split): out[rows, cols] = x[rows] @ W[cols]^T (+ b[cols]) over
    the K columns [split * CHUNK, (split + 1) * CHUNK); with SILU_PAIR, W holds 2N rows (gate, then
    up) and out = silu(x @ W[cols]^T) * (x @ W[N + cols]^T). W (rows, K) row-major. With several
    splits each program stores its fp32 partial products, and the tile's last program to arrive (a
    per-tile counter, which it resets) sums them in split order: deterministic."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    split = tl.program_id(2)
    first_col = pid_n * BLOCK_N
    lo = split * CHUNK
    hi = tl.minimum(lo + CHUNK, K)
    if PREFETCH:
        if pid_m == 0:  # the other row tiles read the same weight rows from L2
            seg = tl.minimum((hi - lo).to(tl.int64) * 2, prefetch_row_bytes)
            _prefetch_rows_l2(w_ptr, first_col, N - first_col, K, lo, seg, BLOCK_N, LANES)
            if SILU_PAIR:
                _prefetch_rows_l2(w_ptr, N + first_col, N - first_col, K, lo, seg, BLOCK_N, LANES)
    pdl_enter(PDL)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    cols = first_col + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    # tl.cast, not .to: a launch turns an int argument equal to 1 into a constant, which has no .to
    up_offset = tl.cast(N, tl.int64) * K
    acc, acc_up = _product(x_ptr, w_ptr, rows.to(tl.int64)[:, None] * x_stride, cols.to(tl.int64)[:, None] * K,
                           row_ok, col_ok, lo, hi, up_offset, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION, SILU_PAIR)
    out_mask = row_ok[:, None] & col_ok[None, :]
    out_at = rows.to(tl.int64)[:, None] * N + cols[None, :]
    last = True
    if SPLITS > 1:
        plane = tl.cast(M, tl.int64) * N  # scratch (2 if SILU_PAIR else 1, SPLITS, M, N) fp32
        tl.store(part_ptr + split * plane + out_at, acc, mask=out_mask)
        if SILU_PAIR:
            tl.store(part_ptr + (SPLITS + split) * plane + out_at, acc_up, mask=out_mask)
        tl.debug_barrier()  # every thread's partial is stored before the counter moves
        tile = pid_m * tl.num_programs(0) + pid_n
        arrived = tl.atomic_add(count_ptr + tile, 1, sem="acq_rel")
        last = arrived == SPLITS - 1  # the others' partials are visible to the last one
        if last:
            acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            acc_up = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for s in range(SPLITS):  # split order, whichever program came last
                acc += tl.load(part_ptr + s * plane + out_at, mask=out_mask, other=0.0, cache_modifier=".cg")
                if SILU_PAIR:
                    acc_up += tl.load(part_ptr + (SPLITS + s) * plane + out_at, mask=out_mask, other=0.0,
                                      cache_modifier=".cg")
            tl.atomic_xchg(count_ptr + tile, 0)  # ready for the next launch (a graph replays this one)
    if last:
        dtype = out_ptr.dtype.element_ty
        if HAS_BIAS:
            acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        if SILU_PAIR:  # rounded as F.linear's outputs, F.silu's and the product are
            g = acc.to(dtype).to(tl.float32)
            act = (g / (1.0 + tl.exp(-g))).to(dtype).to(tl.float32)
            acc = act * acc_up.to(dtype).to(tl.float32)
        tl.store(out_ptr + out_at, acc.to(dtype), mask=out_mask)


@dataclass(frozen=True)
class GemmTiling:
    """Launch shape of `linear` / `gate_up_silu`: a program's output tile (rows x weight rows), the
    reduction step, the K range split over `splits` programs (1: no partial sums), warps and
    pipeline stages."""

    block_m: int = 64
    block_n: int = 32
    block_k: int = 128
    splits: int = 1
    warps: int = 4
    stages: int = 3

    def k_ranges(self, k: int) -> tuple[int, int]:
        """(K columns per split, splits) for a K-column reduction: K / splits rounded up to whole
        reduction steps, so the rounding can leave fewer splits than asked, and none is empty
        (each split's program must arrive at the tile's counter)."""
        chunk = triton.cdiv(triton.cdiv(k, self.splits), self.block_k) * self.block_k
        return chunk, triton.cdiv(k, chunk)


MIN_SPLIT_K = 256
"""The fewest K columns a split of the reduction gets (fewer: the partial sums cost more than the split saves)."""


def default_tiling(m: int, n: int, k: int, sm_count: int) -> GemmTiling:
    """All rows in one tile up to 64 (more rows: 64-row tiles reading the weight from L2), 32
    weight rows per program, and the K range split until there is about one program per SM (at
    most 8 splits of at least MIN_SPLIT_K columns): at these sizes the GEMM is a stream of weight
    rows, and an idle SM streams nothing."""
    block_m = min(64, max(16, triton.next_power_of_2(m)))
    block_n = 32 if n >= 32 else 16
    block_k = min(128, max(16, triton.next_power_of_2(k)))
    tiles = triton.cdiv(m, block_m) * triton.cdiv(n, block_n)
    splits = max(1, min(8, round(sm_count / tiles), k // MIN_SPLIT_K))
    return GemmTiling(block_m, block_n, block_k, splits)


_COUNTERS: dict[tuple, torch.Tensor] = {}
"""Per (device, tiles): the split-K arrival counters, zeroed once; every launch leaves them at zero."""


def _counters(device: torch.device, tiles: int) -> torch.Tensor:
    key = (str(device), tiles)
    if key not in _COUNTERS:
        _COUNTERS[key] = torch.zeros(tiles, dtype=torch.int32, device=device)
    return _COUNTERS[key]


def _launch(x, weight, bias, out_cols: int, silu_pair: bool, pdl: bool, prefetch: bool, tiling: GemmTiling | None,
            sm_count: int | None) -> torch.Tensor:
    m, k = x.shape
    assert x.stride(1) == 1 and weight.is_contiguous() and weight.shape[1] == k, "x rows and W must be contiguous"
    if tiling is None:
        sms = sm_count or (torch.cuda.get_device_properties(x.device).multi_processor_count
                           if x.device.type == "cuda" else 1)
        tiling = default_tiling(m, out_cols, k, sms)
    t = tiling
    chunk, splits = t.k_ranges(k)
    grid = (triton.cdiv(out_cols, t.block_n), triton.cdiv(m, t.block_m), splits)
    out = torch.empty(m, out_cols, dtype=x.dtype, device=x.device)
    if splits > 1:
        part = torch.empty((2 if silu_pair else 1) * splits, m, out_cols, dtype=torch.float32, device=x.device)
        counters = _counters(x.device, grid[0] * grid[1])
    else:
        part = counters = out  # unused
    # the bulk prefetch moves multiples of 16 bytes from 16-byte aligned rows
    prefetch = prefetch and k % 8 == 0 and weight.element_size() == 2 and weight.data_ptr() % 16 == 0
    per_row = PREFETCH_BUDGET // ((2 if silu_pair else 1) * grid[0] * splits * t.block_n) // 16 * 16
    _linear_kernel[grid](
        x, weight, x if bias is None else bias, out, part, counters, m, out_cols, k, x.stride(0), chunk, per_row,
        HAS_BIAS=bias is not None, SILU_PAIR=silu_pair, SPLITS=splits, BLOCK_M=t.block_m, BLOCK_N=t.block_n,
        BLOCK_K=t.block_k, PRECISION="ieee" if x.dtype == torch.float32 else "tf32", PREFETCH=prefetch,
        LANES=32 * t.warps, num_warps=t.warps, num_stages=t.stages, **pdl_launch(pdl))
    return out


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, pdl: bool = False,
           prefetch: bool = False, tiling: GemmTiling | None = None, sm_count: int | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias) for x (M, K) with contiguous rows and a contiguous (N, K) weight.
    `pdl`: launched as a programmatic dependent launch; `prefetch`: the weight rows asked of L2
    before the wait (sm_90; bf16/fp16 weights, K a multiple of 8; otherwise skipped)."""
    return _launch(x, weight, bias, weight.shape[0], False, pdl, prefetch, tiling, sm_count)


def gate_up_silu(x: torch.Tensor, weight: torch.Tensor, *, pdl: bool = False, prefetch: bool = False,
                 tiling: GemmTiling | None = None, sm_count: int | None = None) -> torch.Tensor:
    """silu(x @ W[:I]^T) * (x @ W[I:]^T) (M, I) for the stacked (2I, K) gate/up weight: the two
    projections and SiLU * up in one launch, each program holding the same columns of both."""
    return _launch(x, weight, None, weight.shape[0] // 2, True, pdl, prefetch, tiling, sm_count)
