"""Triton kernels of the fast engine's decode step (CUDA). The step is launch-bound at rollout
sizes, so each kernel replaces several torch ops:

  add_rmsnorm_      residual += delta (in place), then RMSNorm -- HF Qwen2/Llama numerics: the
                    normalised row is rounded to the model dtype before the weight multiply
  rope_and_cache_   RoPE on q and k (rotate-half form), k and v written into the cache column
  decode_attention  one query token per sequence against its cache (GQA: the G query heads of a
                    K/V head in one program), online softmax, reading only columns start..col;
                    for long caches and few sequences the visible columns are split over several
                    programs and their partial softmaxes combined in a second launch (split-KV)
  rope_cache_attention_  both above in the attention's launch: each program rotates its query
                    group, the one holding column col writes the rotated key and the value there
  silu_mul          act(gate) * up of the MLP (SiLU), rounded as the two torch ops would be
  sample_           temperature softmax -> one token per row by inverse CDF (one uniform per row,
                    exact sampling), and its log-prob; greedy is argmax; the vocabulary is split
                    over programs that sum exponentials, then combined (two launches)

Device tensors (the cache column, per-sequence start, the RNG seed) are read inside the kernels,
so every launch can be replayed from a CUDA graph. Shapes: N sequences, H hidden, D head dim,
S cache length, V vocab.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from rlvr.rollout.fast_split_kv import attention_splits, device_sm_count


@triton.jit
def _add_rmsnorm_kernel(x_ptr, delta_ptr, w_ptr, out_ptr, H, eps,
                        HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    valid = cols < H
    x = tl.load(x_ptr + row * H + cols, mask=valid, other=0.0)
    if HAS_DELTA:
        d = tl.load(delta_ptr + row * H + cols, mask=valid, other=0.0)
        x = (x.to(tl.float32) + d.to(tl.float32)).to(x_ptr.dtype.element_ty)
        tl.store(x_ptr + row * H + cols, x, mask=valid)
    xf = x.to(tl.float32)
    var = tl.sum(xf * xf, axis=0) / H
    normed = (xf * (1.0 / tl.sqrt((var + eps).to(tl.float32)))).to(x_ptr.dtype.element_ty)
    w = tl.load(w_ptr + cols, mask=valid, other=0.0)
    tl.store(out_ptr + row * H + cols, (w.to(tl.float32) * normed.to(tl.float32)).to(out_ptr.dtype.element_ty),
             mask=valid)


def add_rmsnorm_(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x (N, H) += delta (in place, when given); returns rmsnorm(x) * weight (N, H)."""
    n, h = x.shape
    out = torch.empty_like(x)
    _add_rmsnorm_kernel[(n,)](x, x if delta is None else delta, weight, out, h, eps,
                              HAS_DELTA=delta is not None, BLOCK=triton.next_power_of_2(h), num_warps=4)
    return out


@triton.jit
def _rope_cache_kernel(q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, q_out_ptr, k_cache_ptr, v_cache_ptr, col_ptr,
                       S, q_stride, k_stride, v_stride, HEADS: tl.constexpr, KV: tl.constexpr, D: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    d = tl.arange(0, D)
    one = tl.arange(0, 1)  # `_rotated` works on row tiles: this one holds the head's row
    cos = tl.load(cos_ptr + n * D + d).to(tl.float32)
    sin = tl.load(sin_ptr + n * D + d).to(tl.float32)
    if head < HEADS:
        x = _rotated(q_ptr + n * q_stride + head * D, one, one < 1, d, cos, sin, D)
        tl.store(q_out_ptr + (n * HEADS + head) * D + one[:, None] * D + d[None, :], x.to(q_out_ptr.dtype.element_ty))
    else:
        kh = head - HEADS
        col = tl.load(col_ptr)
        x = _rotated(k_ptr + n * k_stride + kh * D, one, one < 1, d, cos, sin, D)
        dst = ((n * KV + kh) * S + col) * D + d
        tl.store(k_cache_ptr + dst[None, :], x.to(k_cache_ptr.dtype.element_ty))
        tl.store(v_cache_ptr + dst, tl.load(v_ptr + n * v_stride + kh * D + d))


def rope_and_cache_(q, k, v, cos, sin, k_cache, v_cache, col) -> torch.Tensor:
    """q (N, heads*D), k, v (N, kv*D), cos/sin (N, D) -> rotated q (N, heads, D); rotated k and v
    are written at cache column `col` (a (1,) device tensor) of k_cache/v_cache (N, kv, S, D).
    q, k and v may be column slices of one (N, (heads + 2 kv) * D) projection (rows strided)."""
    n, kv, s, d = k_cache.shape
    heads = q.shape[1] // d
    assert q.stride(1) == k.stride(1) == v.stride(1) == 1, "q, k, v rows must be contiguous"
    q_out = torch.empty(n, heads, d, dtype=q.dtype, device=q.device)
    _rope_cache_kernel[(n, heads + kv)](q, k, v, cos, sin, q_out, k_cache, v_cache, col, s,
                                        q.stride(0), k.stride(0), v.stride(0), HEADS=heads, KV=kv, D=d, num_warps=1)
    return q_out


@triton.jit
def _attend_columns(q, k_ptr, v_ptr, base, lo, hi, start, end, scale, d,
                    BLOCK_G: tl.constexpr, D: tl.constexpr, BLOCK_S: tl.constexpr, PRECISION: tl.constexpr):
    """Online softmax of q (BLOCK_G, D) over the cache columns [lo, hi) (lo a multiple of BLOCK_S)
    of one (sequence, KV head), columns outside [start, end) masked. Every block must hold a
    visible column (the caller's range guarantees it). Returns the running max m, the sum l of
    exp(score - m) and the unnormalised output acc (BLOCK_G, D), fp32."""
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, D], tl.float32)
    for s0 in range(lo, hi, BLOCK_S):
        s = s0 + tl.arange(0, BLOCK_S)
        in_cache = s < end
        k = tl.load(k_ptr + base + s[:, None] * D + d[None, :], mask=in_cache[:, None], other=0.0)
        # .to(fp32): under torch.compile a Python float argument can arrive as an fp64 constant
        scores = (tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale).to(tl.float32)  # (BLOCK_G, BLOCK_S)
        scores = tl.where((in_cache & (s >= start))[None, :], scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(scores - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_ptr + base + s[:, None] * D + d[None, :], mask=in_cache[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    return m_i, l_i, acc


@triton.jit
def _rotated(ptr, rows, row_ok, d, cos, sin, D: tl.constexpr):
    """RoPE (rotate-half form) of the (rows, D) tile at ptr + rows * D + d, fp32 math, rounded to
    the model dtype as `rope_and_cache_` stores it."""
    half: tl.constexpr = D // 2
    partner = (d + half) % D
    sign = tl.where(d < half, -1.0, 1.0)  # rotate_half(x)[d] = -x[d + D/2] (d < D/2), x[d - D/2] (else)
    x = tl.load(ptr + rows[:, None] * D + d[None, :], mask=row_ok[:, None], other=0.0)
    rot = tl.load(ptr + rows[:, None] * D + partner[None, :], mask=row_ok[:, None], other=0.0).to(tl.float32)
    out = x.to(tl.float32) * cos[None, :] + rot * (sign * sin)[None, :]
    return out.to(x.dtype)


@triton.jit
def _query_and_new_column(q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, k_cache_ptr, v_cache_ptr, n, h, g, d, base, col,
                          write, q_stride, k_stride, v_stride, GROUP: tl.constexpr, D: tl.constexpr):
    """The fused prologue: the KV head's query group rotated (BLOCK_G, D), and -- where `write`
    (the program whose columns hold `col`) -- the rotated key and the value stored at column `col`.
    A barrier follows: the program's threads read that column back in the column loop."""
    cos = tl.load(cos_ptr + n * D + d).to(tl.float32)
    sin = tl.load(sin_ptr + n * D + d).to(tl.float32)
    q = _rotated(q_ptr + n * q_stride + h * GROUP * D, g, g < GROUP, d, cos, sin, D)
    one = g < 1  # the key and value are one row: row 0 of a BLOCK_G tile
    k = _rotated(k_ptr + n * k_stride + h * D, g, one, d, cos, sin, D)
    v = tl.load(v_ptr + n * v_stride + h * D + g[:, None] * D + d[None, :], mask=one[:, None], other=0.0)
    at = base + (col + g[:, None]) * D + d[None, :]
    tl.store(k_cache_ptr + at, k, mask=one[:, None] & write)
    tl.store(v_cache_ptr + at, v, mask=one[:, None] & write)
    tl.debug_barrier()
    return q


@triton.jit
def _group_query(q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, k_cache_ptr, v_cache_ptr, n, h, g, d, rows, base, col, write,
                 q_stride, k_stride, v_stride, GROUP: tl.constexpr, D: tl.constexpr, ROPE: tl.constexpr):
    """The KV head's query group (BLOCK_G, D): loaded as rotated by the caller, or with ROPE the
    fused prologue (`_query_and_new_column`: rotated here, and the new column written where `write`)."""
    if ROPE:
        q = _query_and_new_column(q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, k_cache_ptr, v_cache_ptr, n, h, g, d, base,
                                  col, write, q_stride, k_stride, v_stride, GROUP, D)
    else:
        q = tl.load(q_ptr + rows[:, None] * D + d[None, :], mask=g[:, None] < GROUP, other=0.0)
    return q


@triton.jit
def _decode_attention_kernel(q_ptr, k_ptr, v_ptr, out_ptr, start_ptr, col_ptr, scale, S,
                             k_new_ptr, v_new_ptr, cos_ptr, sin_ptr, q_stride, k_stride, v_stride,
                             KV: tl.constexpr, GROUP: tl.constexpr, D: tl.constexpr, ROPE: tl.constexpr,
                             BLOCK_G: tl.constexpr, BLOCK_S: tl.constexpr, PRECISION: tl.constexpr):
    """Program (n, h): the query group of KV head h over all of sequence n's visible columns. With
    ROPE, q is the raw projection and the program first does `rope_and_cache_`'s work for its head."""
    n = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, D)
    rows = (n * KV + h) * GROUP + g  # query heads h*GROUP .. h*GROUP+GROUP-1 of sequence n
    base = (n * KV + h) * S * D
    col = tl.load(col_ptr)
    start = tl.load(start_ptr + n)  # first valid column (left padding before it)
    end = col + 1  # columns written so far
    first = (start // BLOCK_S) * BLOCK_S
    q = _group_query(q_ptr, k_new_ptr, v_new_ptr, cos_ptr, sin_ptr, k_ptr, v_ptr, n, h, g, d, rows, base, col, True,
                     q_stride, k_stride, v_stride, GROUP, D, ROPE)
    m_i, l_i, acc = _attend_columns(q, k_ptr, v_ptr, base, first, end,
                                    start, end, scale, d, BLOCK_G, D, BLOCK_S, PRECISION)
    out = acc / l_i[:, None]
    tl.store(out_ptr + rows[:, None] * D + d[None, :], out.to(out_ptr.dtype.element_ty), mask=g[:, None] < GROUP)


@triton.jit
def _decode_attention_split_kernel(q_ptr, k_ptr, v_ptr, part_m_ptr, part_l_ptr, part_acc_ptr, start_ptr, col_ptr,
                                   scale, S, SPLITS, k_new_ptr, v_new_ptr, cos_ptr, sin_ptr, q_stride, k_stride,
                                   v_stride, KV: tl.constexpr, GROUP: tl.constexpr, D: tl.constexpr,
                                   ROPE: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_S: tl.constexpr,
                                   PRECISION: tl.constexpr):
    """Program (n, h, split): the partial softmax of the KV head's query group over one of SPLITS
    equal ranges of whole blocks of the columns visible now, start[n]..col: the ranges follow the
    column, so every split has work from early in a generation on, not only once `col` reaches
    it. A split past the visible columns runs no block and stores m = -inf, l = 0, acc = 0 (the
    scratch is uninitialised: the combine must not read garbage, which could be NaN, even at
    weight 0). With ROPE the split holding `col` writes the new key and value (see
    `_decode_attention_kernel`)."""
    n = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    split = tl.program_id(2)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, D)
    rows = (n * KV + h) * GROUP + g
    in_group = g < GROUP
    base = (n * KV + h) * S * D
    start = tl.load(start_ptr + n)
    col = tl.load(col_ptr)
    end = col + 1
    first = (start // BLOCK_S) * BLOCK_S
    chunk = tl.cdiv(tl.cdiv(end - first, SPLITS), BLOCK_S) * BLOCK_S
    # each range is whole blocks, so no block crosses into the next split; its first block holds
    # `start` or the range's first column, both visible when the range is not empty
    lo = first + split * chunk
    hi = tl.minimum(lo + chunk, end)
    q = _group_query(q_ptr, k_new_ptr, v_new_ptr, cos_ptr, sin_ptr, k_ptr, v_ptr, n, h, g, d, rows, base, col,
                     (lo <= col) & (col < hi), q_stride, k_stride, v_stride, GROUP, D, ROPE)
    m_i, l_i, acc = _attend_columns(q, k_ptr, v_ptr, base, lo, hi, start, end, scale, d,
                                    BLOCK_G, D, BLOCK_S, PRECISION)
    part = rows * SPLITS + split  # scratch (N * heads, SPLITS[, D])
    tl.store(part_m_ptr + part, m_i, mask=in_group)
    tl.store(part_l_ptr + part, l_i, mask=in_group)
    tl.store(part_acc_ptr + part[:, None] * D + d[None, :], acc, mask=in_group[:, None])


@triton.jit
def _combine_splits_kernel(part_m_ptr, part_l_ptr, part_acc_ptr, out_ptr, SPLITS,
                           BLOCK_SPLITS: tl.constexpr, D: tl.constexpr):
    """Program r (query head r of the flattened (N, heads)): the splits' partial softmaxes
    rescaled to their common max (log-sum-exp), summed and normalised. SPLITS is a runtime
    value (as in the split kernel): compacted batches, each with its own count, share a build."""
    row = tl.program_id(0).to(tl.int64)
    j = tl.arange(0, BLOCK_SPLITS)
    d = tl.arange(0, D)
    ok = j < SPLITS
    part = row * SPLITS + j
    m = tl.load(part_m_ptr + part, mask=ok, other=float("-inf"))
    l = tl.load(part_l_ptr + part, mask=ok, other=0.0)
    acc = tl.load(part_acc_ptr + part[:, None] * D + d[None, :], mask=ok[:, None], other=0.0)
    m_all = tl.max(m, axis=0)
    weight = tl.exp(m - m_all)  # empty splits (m = -inf, acc = 0) weigh 0; the column `col` is never empty
    out = tl.sum(acc * weight[:, None], axis=0) / tl.sum(l * weight, axis=0)
    tl.store(out_ptr + row * D + d, out.to(out_ptr.dtype.element_ty))


@dataclass(frozen=True)
class AttentionTiling:
    """Launch parameters of the decode attention kernels. The best values depend on the GPU and
    the cache length; `benchmarks/tune_decode_attention.py` measures them against each other."""

    block_s: int = 64
    """Cache columns per loop iteration (a power of two >= 16: the tile of the two tl.dot)."""
    num_warps: int = 4
    num_stages: int | None = None
    """Software-pipelining depth of the column loop (loads of the next blocks in flight while
    the current one is used); None leaves Triton's default."""

    def launch(self) -> dict:
        """Keyword arguments of a kernel launch."""
        return {"num_warps": self.num_warps, **({"num_stages": self.num_stages} if self.num_stages else {})}


ATTENTION_TILING = AttentionTiling()
"""What the engine launches with (read at each call: a tuning run may replace it before capture)."""


def decode_attention(q, k_cache, v_cache, start, col, scale: float, splits: int | None = None,
                     tiling: AttentionTiling | None = None) -> torch.Tensor:
    """q (N, heads, D) against the cache (N, kv, S, D) columns start[n]..col -> (N, heads*D).

    `splits`: equal ranges of whole blocks each (sequence, KV head)'s visible columns are divided
    into, one program each (more programs than N x kv: long caches fill the GPU), their partial
    softmaxes combined by a second launch; 1 runs one program per pair over all its columns; None
    picks `attention_splits` for these shapes and q's device. The count is a launch shape: fixed
    for a captured CUDA graph; the ranges follow the current column inside the kernel.
    `tiling`: launch parameters, ATTENTION_TILING when None."""
    return _attention(q, None, k_cache, v_cache, start, col, scale, splits, tiling)


def rope_cache_attention_(q, k, v, cos, sin, k_cache, v_cache, start, col, scale: float, splits: int | None = None,
                          tiling: AttentionTiling | None = None) -> torch.Tensor:
    """`rope_and_cache_` then `decode_attention`, without the launch between them: q (N, heads*D),
    k, v (N, kv*D) are the raw projections (rows may be strided: column slices of one q/k/v
    output), cos/sin (N, D). Each attention program rotates its query group, and the program whose
    columns hold `col` rotates its key and writes it and the value at `col` before reading the
    columns. Returns (N, heads*D); the cache holds what `rope_and_cache_` would have written."""
    d = k_cache.shape[-1]
    assert q.stride(1) == k.stride(1) == v.stride(1) == 1, "q, k, v rows must be contiguous"
    assert cos.is_contiguous() and sin.is_contiguous() and cos.shape[-1] == d
    return _attention(q, (k, v, cos, sin), k_cache, v_cache, start, col, scale, splits, tiling)


def _attention(q, rope, k_cache, v_cache, start, col, scale, splits, tiling) -> torch.Tensor:
    """Both entry points: `rope` is None (q rotated, (N, heads, D)) or (k, v, cos, sin)."""
    tiling = tiling or ATTENTION_TILING
    n, kv, s, d = k_cache.shape
    heads = q.shape[1] if rope is None else q.shape[1] // d
    if rope is None:
        rope_args = (q, q, q, q, 0, 0, 0)  # unused pointers and strides
    else:
        k, v, cos, sin = rope
        rope_args = (k, v, cos, sin, q.stride(0), k.stride(0), v.stride(0))
    if splits is None:
        splits = attention_splits(n, kv, s, device_sm_count(q.device))
    splits = min(splits, triton.cdiv(s, tiling.block_s))  # at most one split per block of columns
    shape = dict(KV=kv, GROUP=heads // kv, D=d, ROPE=rope is not None,
                 BLOCK_G=max(16, triton.next_power_of_2(heads // kv)), BLOCK_S=tiling.block_s,
                 PRECISION=_precision(q.dtype), **tiling.launch())
    out = torch.empty(n, heads * d, dtype=q.dtype, device=q.device)
    if splits == 1:
        _decode_attention_kernel[(n, kv)](q, k_cache, v_cache, out, start, col, scale, s, *rope_args, **shape)
        return out
    # fp32 scratch of N x heads x splits x (D + 2): each split's partial softmax, then one launch
    # combining them per query head
    part_m, part_l = (torch.empty(n * heads, splits, dtype=torch.float32, device=q.device) for _ in range(2))
    part_acc = torch.empty(n * heads, splits, d, dtype=torch.float32, device=q.device)
    _decode_attention_split_kernel[(n, kv, splits)](q, k_cache, v_cache, part_m, part_l, part_acc, start, col,
                                                    scale, s, splits, *rope_args, **shape)
    _combine_splits_kernel[(n * heads,)](part_m, part_l, part_acc, out, splits,
                                         BLOCK_SPLITS=triton.next_power_of_2(splits), D=d, num_warps=1)
    return out


@triton.jit
def _silu_mul_kernel(gate_ptr, up_ptr, out_ptr, I, gate_stride, up_stride, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = cols < I
    g = tl.load(gate_ptr + row * gate_stride + cols, mask=valid, other=0.0).to(tl.float32)
    u = tl.load(up_ptr + row * up_stride + cols, mask=valid, other=0.0).to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(out_ptr.dtype.element_ty)  # rounded like torch's silu output
    tl.store(out_ptr + row * I + cols, (act.to(tl.float32) * u).to(out_ptr.dtype.element_ty), mask=valid)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for gate, up (N, I); both may be column slices of one (N, 2I) projection."""
    n, i = gate.shape
    assert gate.stride(1) == up.stride(1) == 1, "gate and up rows must be contiguous"
    out = torch.empty(n, i, dtype=gate.dtype, device=gate.device)
    block = 1024
    _silu_mul_kernel[(n, triton.cdiv(i, block))](gate, up, out, i, gate.stride(0), up.stride(0), BLOCK=block)
    return out


@triton.jit
def _scaled_logits(base, cols, V, inv_temp):
    """logits[cols] / T in fp32, -inf beyond the vocabulary. (The second .to(fp32): under
    torch.compile a Python float argument can arrive as an fp64 constant.)"""
    x = tl.load(base + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
    return (x * inv_temp).to(tl.float32)


@triton.jit
def _fold_exp_sum(x, m, s):
    """Fold x (invalid columns -inf) into per-lane running max m and sum s of exp(x - m) with one
    exp per element: exp(-|x - m|) is the new term when x <= m, the old sum's rescale when x > m."""
    e = tl.where(x == float("-inf"), 0.0, tl.exp(-tl.abs(x - m)))  # m = -inf < x: exp(-inf) = 0
    s = tl.where(x > m, s * e + 1.0, s + e)
    return tl.maximum(m, x), s


@triton.jit
def _sample_partial_kernel(logits_ptr, V, inv_temp, part_m_ptr, part_s_ptr, part_idx_ptr, CHUNK,
                           SPLITS: tl.constexpr, GREEDY: tl.constexpr, BLOCK: tl.constexpr):
    """Program (row, split): max m and sum of exp(x - m) of x = logits / T over the columns
    [split * CHUNK, (split + 1) * CHUNK) of the row (m = -inf, sum 0 past the vocabulary); with
    GREEDY also the first column holding the max. Per-lane state, one cross-lane reduction at the end."""
    row = tl.program_id(0)
    split = tl.program_id(1)
    base = logits_ptr + row.to(tl.int64) * V
    lanes = tl.arange(0, BLOCK)
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK], tl.float32)
    first = tl.zeros([BLOCK], tl.int32)
    lo = split * CHUNK
    for start in range(lo, tl.minimum(lo + CHUNK, V), BLOCK):
        cols = start + lanes
        x = _scaled_logits(base, cols, V, inv_temp)
        if GREEDY:
            first = tl.where(x > m, cols, first)  # strict: a lane keeps its first maximum
        m, s = _fold_exp_sum(x, m, s)
    m_all = tl.max(m, axis=0)
    s_all = tl.sum(tl.where(s > 0, s * tl.exp(m - m_all), 0.0), axis=0)
    out = row * SPLITS + split
    tl.store(part_m_ptr + out, m_all)
    tl.store(part_s_ptr + out, s_all)
    if GREEDY:
        tl.store(part_idx_ptr + out, tl.min(tl.where(m == m_all, first, 2147483647), axis=0))


@triton.jit
def _inverse_cdf_column(base, V, inv_temp, m_all, lo, hi, r, BLOCK: tl.constexpr):
    """The first column c in [lo, hi) where the running sum of exp(x - m_all) passes r (the last
    column of positive weight if rounding leaves r unreached). Blocks wholly before the crossing
    cost one sum; the cumulative sum runs only on the block that holds it."""
    lanes = tl.arange(0, BLOCK)
    running = 0.0
    found = 2147483647
    last = lo
    for start in range(lo, hi, BLOCK):
        cols = start + lanes
        p = tl.exp(_scaled_logits(base, cols, V, inv_temp) - m_all)  # -inf -> 0
        total = tl.sum(p, axis=0)
        if (found == 2147483647) & (running + total > r):
            c = running + tl.cumsum(p, axis=0)
            found = tl.min(tl.where(c > r, cols, 2147483647), axis=0)
        last = tl.maximum(last, tl.max(tl.where(p > 0, cols, -1), axis=0))
        running += total
    return tl.where(found == 2147483647, last, found)


@triton.jit
def _sample_combine_kernel(logits_ptr, V, inv_temp, seed_ptr, part_m_ptr, part_s_ptr, part_idx_ptr, CHUNK,
                           token_ptr, logp_ptr, finished_ptr, stop_ptr, n_stop, pad_id, out_tokens_ptr,
                           out_logp_ptr, step_ptr, max_new, pos_ptr,
                           SPLITS: tl.constexpr, GREEDY: tl.constexpr, BLOCK: tl.constexpr, RECORD: tl.constexpr,
                           STOP_BLOCK: tl.constexpr):
    """Per row: the splits' (m, sum) combined by log-sum-exp into the row's normaliser; the token
    is the first max (GREEDY), else drawn by inverse CDF: one uniform u per row, the split where
    the cumulative mass passes u times the total, then the column inside it. Its log-prob too.
    With RECORD, also the decode step's bookkeeping: a finished row gets the pad token and
    log-prob 0, both are written at output column `step`, the row finishes on a stop token, and
    its position advances."""
    row = tl.program_id(0)
    j = tl.arange(0, SPLITS)
    i = row * SPLITS + j
    m = tl.load(part_m_ptr + i)
    m_all = tl.max(m, axis=0)
    w = tl.where(m > float("-inf"), tl.load(part_s_ptr + i) * tl.exp(m - m_all), 0.0)  # empty splits weigh 0
    cum = tl.cumsum(w, axis=0)
    total = tl.max(cum, axis=0)  # the last cumulative sum: `cum` is the one scale of the draw
    base = logits_ptr + row.to(tl.int64) * V
    if GREEDY:
        token = tl.min(tl.where(m == m_all, tl.load(part_idx_ptr + i), 2147483647), axis=0)  # splits in column order
    else:
        seed = tl.load(seed_ptr)
        u = tl.sum(tl.rand(seed, row + tl.zeros([1], tl.int32)), axis=0)
        target = tl.minimum(u, 1.0 - 2.0 ** -23) * total  # below the total: u can round to 1.0
        nonempty = tl.max(tl.where(w > 0, j, 0), axis=0)
        pick = tl.minimum(tl.sum((cum <= target).to(tl.int32), axis=0), nonempty)
        before = tl.sum(tl.where(j == pick - 1, cum, 0.0), axis=0)
        lo = pick * CHUNK
        token = _inverse_cdf_column(base, V, inv_temp, m_all, lo, tl.minimum(lo + CHUNK, V), target - before, BLOCK)
    x_token = _scaled_logits(base, token, V, inv_temp)
    logp = x_token - (m_all + tl.log(total))
    token = token.to(tl.int64)
    if RECORD:
        done = tl.load(finished_ptr + row) != 0
        token = tl.where(done, pad_id, token)
        logp = tl.where(done, 0.0, logp)
        k = tl.arange(0, STOP_BLOCK)
        stops = tl.load(stop_ptr + k, mask=k < n_stop, other=-1)
        stopped = tl.sum((stops == token).to(tl.int32), axis=0) > 0
        step = tl.load(step_ptr)
        tl.store(out_tokens_ptr + row.to(tl.int64) * max_new + step, token)
        tl.store(out_logp_ptr + row.to(tl.int64) * max_new + step, logp)
        tl.store(finished_ptr + row, (done | stopped).to(finished_ptr.dtype.element_ty))
        tl.store(pos_ptr + row, tl.load(pos_ptr + row) + 1)
    tl.store(token_ptr + row, token)
    tl.store(logp_ptr + row, logp)


_SAMPLE_BLOCK = 2048
_SAMPLE_PROGRAMS = 2048  # row x split programs: enough to fill an H200 several times over


def sample_(logits: torch.Tensor, temperature: float, seed: torch.Tensor, record=None) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (N, V) -> token (N,) sampled from softmax(logits / T) (argmax when T = 0) and its
    log-prob under softmax(logits / T) (T = 1 when greedy). `seed` (1,) int64 on the device;
    the caller advances it between calls.

    `record`, optional: the decode state (attributes tokens (N,), finished (N,) bool, stop_ids (k,),
    pad_id, out_tokens/out_logp (N, max_new), step (1,), pos (N,)); the combine launch then also
    does the step's bookkeeping (see `_sample_combine_kernel`) and writes the token (the pad token
    for finished rows) into `tokens`. The caller advances `step` (and the cache column).

    Two launches: each row's vocabulary is split over several programs (a few rows alone would
    leave most of the GPU idle) that reduce it to a max and a sum of exponentials, one exp per
    entry; then one program per row combines the splits and draws by inverse CDF, re-reading only
    the split its uniform falls in. (A Gumbel-max race, the earlier design, needs a random number
    and two logs per entry: about three times the work on a 150k vocabulary.)
    """
    n, v = logits.shape
    blocks = triton.cdiv(v, _SAMPLE_BLOCK)
    splits = min(64, triton.next_power_of_2(triton.cdiv(_SAMPLE_PROGRAMS, n)), triton.next_power_of_2(blocks))
    chunk = triton.cdiv(blocks, splits) * _SAMPLE_BLOCK
    part_m, part_s = (torch.empty(n, splits, dtype=torch.float32, device=logits.device) for _ in range(2))
    part_idx = torch.empty(n, splits, dtype=torch.int32, device=logits.device)
    token = torch.empty(n, dtype=torch.long, device=logits.device) if record is None else record.tokens
    logp = torch.empty(n, dtype=torch.float32, device=logits.device)
    greedy = temperature == 0
    inv_temp = 1.0 if greedy else 1.0 / temperature
    _sample_partial_kernel[(n, splits)](logits, v, inv_temp, part_m, part_s, part_idx, chunk,
                                        SPLITS=splits, GREEDY=greedy, BLOCK=_SAMPLE_BLOCK, num_warps=4)
    if record is None:
        bookkeeping = (token, token, 0, 0, token, logp, seed, 0, token)  # unused pointers
        stop_block = 1
    else:
        r = record
        bookkeeping = (r.finished, r.stop_ids, r.stop_ids.numel(), r.pad_id, r.out_tokens, r.out_logp, r.step,
                       r.out_tokens.shape[1], r.pos)
        stop_block = triton.next_power_of_2(max(1, r.stop_ids.numel()))
    _sample_combine_kernel[(n,)](logits, v, inv_temp, seed, part_m, part_s, part_idx, chunk, token, logp,
                                 *bookkeeping, SPLITS=splits, GREEDY=greedy, BLOCK=_SAMPLE_BLOCK,
                                 RECORD=record is not None, STOP_BLOCK=stop_block, num_warps=4)
    return token, logp


# ----------------------------------------------------------------------------- GEMMs with fused prologue/epilogue
# The two kernels below turn a layer's 9 launches before o_proj/down_proj into 2: the residual add,
# the RMSNorm, the projection(s) and their epilogue (bias + RoPE + cache write, or SiLU * up) in
# one GEMM each. RMSNorm scales each row by one number, so the GEMM runs on (x + delta) * weight
# while summing the squares of the same tiles, and the row scale multiplies the accumulator at the
# end: one pass over x (K = H is small, every program reads all of it). The weights are read from
# the model's own nn.Linear parameters (no concatenated copy), so optimizer steps are seen as
# before. Rounding: the residual, the projection outputs and SiLU are rounded to the model dtype
# where torch rounds them; the normed row is not rounded before the GEMM (torch rounds it twice),
# a difference of bf16 rounding size.

@triton.jit
def _weighted_tile(x_ptr, delta_ptr, x_out_ptr, nw_ptr, rows, row_ok, k, k_ok, write_x,
                   H: tl.constexpr, HAS_DELTA: tl.constexpr):
    """(BLOCK_M, BLOCK_K) tile of (x + delta) * norm weight in the model dtype, and the tile's
    per-row sum of squares of x + delta (fp32). The program that owns column tile 0 also writes
    x + delta (the next residual stream) to x_out."""
    mask = row_ok[:, None] & k_ok[None, :]
    offs = rows[:, None] * H + k[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    if HAS_DELTA:
        d = tl.load(delta_ptr + offs, mask=mask, other=0.0)
        x = (x.to(tl.float32) + d.to(tl.float32)).to(x_ptr.dtype.element_ty)  # rounded as torch's add
        tl.store(x_out_ptr + offs, x, mask=mask & write_x)
    xf = x.to(tl.float32)
    w = tl.load(nw_ptr + k, mask=k_ok, other=0.0).to(tl.float32)
    return (xf * w[None, :]).to(x_ptr.dtype.element_ty), tl.sum(xf * xf, axis=1)


@triton.jit
def _norm_dual_gemm(x_ptr, delta_ptr, x_out_ptr, nw_ptr, eps, rows64, row_ok, write_x, w1_ptr, w2_ptr,
                    w_rows, w_rows_ok, H: tl.constexpr, HAS_DELTA: tl.constexpr, BLOCK_M: tl.constexpr,
                    WIDTH: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """rmsnorm(x [+ delta]) (BLOCK_M rows) times two weights' rows `w_rows` (WIDTH output columns
    each, W (out, in) row-major): the two (BLOCK_M, WIDTH) fp32 products, the row scale applied."""
    acc1 = tl.zeros([BLOCK_M, WIDTH], tl.float32)
    acc2 = tl.zeros([BLOCK_M, WIDTH], tl.float32)
    ss = tl.zeros([BLOCK_M], tl.float32)
    for k0 in range(0, H, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < H
        a, tile_ss = _weighted_tile(x_ptr, delta_ptr, x_out_ptr, nw_ptr, rows64, row_ok, k, k_ok,
                                    write_x, H, HAS_DELTA)
        ss += tile_ss
        # the (BLOCK_K, WIDTH) tile of W^T is strided along out
        w_offs = w_rows[None, :] * H + k[:, None]
        w_mask = k_ok[:, None] & w_rows_ok[None, :]
        acc1 = tl.dot(a, tl.load(w1_ptr + w_offs, mask=w_mask, other=0.0), acc1, input_precision=PRECISION)
        acc2 = tl.dot(a, tl.load(w2_ptr + w_offs, mask=w_mask, other=0.0), acc2, input_precision=PRECISION)
    rstd = (1.0 / tl.sqrt(ss / H + eps))[:, None]
    return acc1 * rstd, acc2 * rstd


def _one_row_tile(n: int) -> int:
    """BLOCK_M covering all N rows (up to 256): every weight tile is then read from memory once."""
    return min(256, max(16, triton.next_power_of_2(n)))


def _gemm_configs(block_ns, block_ks, max_acc_regs: int) -> list:
    """Configs for the fused GEMMs, tuned per N (rows) the first time a shape runs -- before a CUDA
    graph capture, in the engine's warm-up; the choice is cached on disk (Triton's cache), so
    later processes skip the tuning. One config under the CPU interpreter (no timing there)."""
    import os

    if os.environ.get("TRITON_INTERPRET") == "1":
        return [triton.Config(dict(BLOCK_M=64, BLOCK_N=block_ns[0], BLOCK_K=128), num_warps=4)]
    configs = []
    for bm in (16, 32, 64, 128, 256):
        for bn in block_ns:
            for bk in block_ks:
                for warps, stages in ((4, 3), (8, 3)):
                    # two fp32 accumulators of BM x BN spread over the warps' threads
                    if 2 * bm * bn / (warps * 32) <= max_acc_regs:
                        configs.append(triton.Config(dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk),
                                                     num_warps=warps, num_stages=stages))
    return configs


def _prune_to_one_row_tile(configs, named_args, **kwargs):
    """Row tiles of all N rows, or of half of them (twice the programs, each weight tile read twice)."""
    bm = _one_row_tile(named_args["N"])
    kept = [c for c in configs if c.kwargs["BLOCK_M"] in (bm, bm // 2)]
    return kept or configs[:1]


@triton.autotune(configs=_gemm_configs((0,), (128, 256), 128), key=["N", "H"],
                 prune_configs_by={"early_config_prune": _prune_to_one_row_tile}, warmup=5, rep=20, cache_results=True)
@triton.jit
def _norm_qkv_rope_cache_kernel(
        x_ptr, delta_ptr, x_out_ptr, nw_ptr, eps,
        wq_ptr, wk_ptr, wv_ptr, bq_ptr, bk_ptr, bv_ptr,
        cos_ptr, sin_ptr, q_out_ptr, k_cache_ptr, v_cache_ptr, col_ptr, N, S, H: tl.constexpr,
        HEADS: tl.constexpr, KV: tl.constexpr, D: tl.constexpr, HAS_DELTA: tl.constexpr, HAS_BIAS: tl.constexpr,
        PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Program (row tile, j): head j of q (j < HEADS), of k (next KV) or of v (last KV); the head's
    two halves are separate accumulators, so RoPE's rotate-half is a swap of two tiles (BLOCK_N unused:
    a program's columns are one head)."""
    pid_m = tl.program_id(0)
    j = tl.program_id(1)
    HALF: tl.constexpr = D // 2
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    if j < HEADS:
        w_ptr = wq_ptr + j * D * H
        b_ptr = bq_ptr + j * D
    elif j < HEADS + KV:
        w_ptr = wk_ptr + (j - HEADS) * D * H
        b_ptr = bk_ptr + (j - HEADS) * D
    else:
        w_ptr = wv_ptr + (j - HEADS - KV) * D * H
        b_ptr = bv_ptr + (j - HEADS - KV) * D
    e = tl.arange(0, HALF)
    acc_lo, acc_hi = _norm_dual_gemm(x_ptr, delta_ptr, x_out_ptr, nw_ptr, eps, rows64, row_ok, j == 0,
                                     w_ptr, w_ptr + HALF * H, e, e < HALF, H, HAS_DELTA, BLOCK_M, HALF,
                                     BLOCK_K, PRECISION)
    if HAS_BIAS:
        acc_lo += tl.load(b_ptr + e).to(tl.float32)[None, :]
        acc_hi += tl.load(b_ptr + HALF + e).to(tl.float32)[None, :]
    # the projection's output in the model dtype, as nn.Linear returns it
    lo = acc_lo.to(q_out_ptr.dtype.element_ty).to(tl.float32)
    hi = acc_hi.to(q_out_ptr.dtype.element_ty).to(tl.float32)
    mask = row_ok[:, None]
    if j < HEADS + KV:  # RoPE: rotate_half(x) = (-hi, lo)
        cs = rows64[:, None] * D + e[None, :]
        cos_lo = tl.load(cos_ptr + cs, mask=mask, other=0.0).to(tl.float32)
        cos_hi = tl.load(cos_ptr + cs + HALF, mask=mask, other=0.0).to(tl.float32)
        sin_lo = tl.load(sin_ptr + cs, mask=mask, other=0.0).to(tl.float32)
        sin_hi = tl.load(sin_ptr + cs + HALF, mask=mask, other=0.0).to(tl.float32)
        lo, hi = lo * cos_lo - hi * sin_lo, hi * cos_hi + lo * sin_hi
    if j < HEADS:
        dst = q_out_ptr + (rows64[:, None] * HEADS + j) * D + e[None, :]
    else:
        col = tl.load(col_ptr)
        kh = (j - HEADS) % KV
        at = (rows64[:, None] * KV + kh) * S * D + col * D + e[None, :]
        if j < HEADS + KV:
            dst = k_cache_ptr + at
        else:
            dst = v_cache_ptr + at
    tl.store(dst, lo.to(q_out_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + HALF, hi.to(q_out_ptr.dtype.element_ty), mask=mask)


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def norm_qkv_rope_cache_(x, delta, x_out, norm_weight, eps, q_proj, k_proj, v_proj, cos, sin,
                         k_cache, v_cache, col) -> torch.Tensor:
    """x (N, H) [+ delta, written to x_out] -> RMSNorm -> q, k, v projections (+ bias) -> RoPE on q
    and k; k and v written at cache column `col` of k_cache/v_cache (N, kv, S, D). Returns the
    rotated q (N, heads, D). One launch."""
    n, h = x.shape
    _, kv, s, d = k_cache.shape
    heads = q_proj.weight.shape[0] // d
    q_out = torch.empty(n, heads, d, dtype=x.dtype, device=x.device)
    has_bias = q_proj.bias is not None
    bias = (q_proj.bias, k_proj.bias, v_proj.bias) if has_bias else (x, x, x)
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_M"]), heads + 2 * kv)  # noqa: E731
    _norm_qkv_rope_cache_kernel[grid](
        x, x if delta is None else delta, x_out, norm_weight, eps,
        q_proj.weight, k_proj.weight, v_proj.weight, *bias,
        cos, sin, q_out, k_cache, v_cache, col, n, s, H=h,
        HEADS=heads, KV=kv, D=d, HAS_DELTA=delta is not None, HAS_BIAS=has_bias,
        PRECISION=_precision(x.dtype))
    return q_out


@triton.autotune(configs=_gemm_configs((32, 64, 128), (128,), 128), key=["N", "I", "H"],
                 prune_configs_by={"early_config_prune": _prune_to_one_row_tile}, warmup=5, rep=20, cache_results=True)
@triton.jit
def _norm_gate_up_silu_kernel(x_ptr, delta_ptr, x_out_ptr, nw_ptr, eps, wg_ptr, wu_ptr, out_ptr, N, I,
                              H: tl.constexpr, HAS_DELTA: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                              BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < I
    cols64 = cols.to(tl.int64)
    acc_g, acc_u = _norm_dual_gemm(x_ptr, delta_ptr, x_out_ptr, nw_ptr, eps, rows64, row_ok, pid_n == 0,
                                   wg_ptr, wu_ptr, cols64, col_ok, H, HAS_DELTA, BLOCK_M, BLOCK_N, BLOCK_K,
                                   PRECISION)
    g = acc_g.to(out_ptr.dtype.element_ty).to(tl.float32)
    u = acc_u.to(out_ptr.dtype.element_ty).to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(out_ptr.dtype.element_ty).to(tl.float32)  # silu rounded as torch's
    tl.store(out_ptr + rows64[:, None] * I + cols64[None, :], (act * u).to(out_ptr.dtype.element_ty),
             mask=row_ok[:, None] & col_ok[None, :])


def norm_gate_up_silu(x, delta, x_out, norm_weight, eps, gate_proj, up_proj) -> torch.Tensor:
    """x (N, H) [+ delta, written to x_out] -> RMSNorm -> silu(gate_proj(.)) * up_proj(.) (N, I). One launch."""
    n, h = x.shape
    inter = gate_proj.weight.shape[0]
    out = torch.empty(n, inter, dtype=x.dtype, device=x.device)
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_M"]), triton.cdiv(inter, meta["BLOCK_N"]))  # noqa: E731
    _norm_gate_up_silu_kernel[grid](
        x, x if delta is None else delta, x_out, norm_weight, eps, gate_proj.weight, up_proj.weight, out,
        n, inter, H=h, HAS_DELTA=delta is not None, PRECISION=_precision(x.dtype))
    return out
