"""Fused policy loss on CUDA: hidden states + lm_head weight -> loss and its gradients, with the
(N, T, V) logits never held; same signatures and results as `rlvr.kernels.reference`.

Design (the gradient is computed during the forward pass, as Liger does, but over large chunks):
valid tokens (mask > 0) are gathered into M rows and cut into chunks of whole sequences. For each
chunk of C rows:
  1. logits (C, V) = h @ W^T, one bf16 cuBLAS matmul into a reused chunk buffer;
  2. one Triton pass per row: online log-sum-exp, the target's logit, entropy
     (H = lse - sum_v p_v x_v, accumulated in the same pass);
  3. dL/dlogp of the chunk's tokens by autograd on (k, T) vectors through the registered loss
     (`compute_policy_loss(..., with_metrics=False)`: the metrics' host sync would idle the
     GPU on every chunk): the chunk holds whole sequences and the loss is normalised by global
     counts (`LossNormalizer`), so the chunk's loss is exactly its share of the batch loss --
     GSPO's sequence ratio included, with no extra pass. Any registered variant works;
  4. a second Triton pass overwrites the logits in place with
     dL/dlogits = dL/dlogp * (onehot(target) - softmax);
  5. grad_h = dlogits @ W and grad_W += dlogits^T @ h (fp32 accumulator), two matmuls.
So three matmuls instead of four (no recompute in backward), three memory passes over each chunk's
logits, and extra memory of one (C, V) bf16 buffer plus an fp32 (V, H) gradient accumulator.
backward() only scales the stored gradients by the incoming gradient.

Metrics come from one final `compute_policy_loss` call on the (N, T) log-probs, so they are the
reference's metrics exactly, plus `entropy/mean`. Shapes: N sequences, T tokens, H hidden,
V vocab, M valid tokens, C rows of one chunk.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from rlvr.algorithms.losses import (POLICY_LOSSES, LossNormalizer, PolicyLossConfig, PolicyLossInput,
                                   check_policy_loss_input, compute_policy_loss, loss_config)
from rlvr.kernels.reference import _scatter_rows, _valid_rows

DEFAULT_CHUNK_BYTES = 5 << 28
"""Bytes of the reused logits buffer (1.25 GiB: 4416 bf16 rows at V = 151936): larger chunks
cost memory and gain almost no time (BENCHMARKS.md)."""

BLOCK_V = 4096
"""Vocabulary columns one program handles per loop step (fp32 in registers: 16 KiB per row)."""


def default_chunk_rows(vocab_size: int, element_size: int = 2) -> int:
    return max(1, DEFAULT_CHUNK_BYTES // (vocab_size * element_size))


# ----------------------------------------------------------------------------- Triton kernels

@triton.jit
def _row_stats_kernel(logits_ptr, stride_row, targets_ptr, logp_ptr, lse_ptr, entropy_ptr,
                      V, BLOCK: tl.constexpr):
    """One program per row: lse, logp[target] = x_t - lse, entropy = lse - sum p x (online)."""
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride_row
    m = float("-inf")  # running max
    s = 0.0  # sum exp(x - m)
    u = 0.0  # sum exp(x - m) * x
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        valid = cols < V
        x = tl.load(base + cols, mask=valid, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, 0))
        alpha = tl.exp(m - m_new)
        e = tl.exp(x - m_new)  # 0 on padding lanes
        s = s * alpha + tl.sum(e, 0)
        u = u * alpha + tl.sum(tl.where(valid, e * x, 0.0), 0)  # e * -inf would be nan
        m = m_new
    lse = m + tl.log(s)
    target = tl.load(targets_ptr + row)
    x_t = tl.load(base + target).to(tl.float32)
    tl.store(logp_ptr + row, x_t - lse)
    tl.store(lse_ptr + row, lse)
    tl.store(entropy_ptr + row, lse - u / s)


@triton.jit
def _dlogits_kernel(logits_ptr, stride_row, targets_ptr, lse_ptr, coef_ptr, V, BLOCK: tl.constexpr):
    """In place: logits[row] <- coef[row] * (onehot(target) - softmax(logits[row]))."""
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride_row
    lse = tl.load(lse_ptr + row)
    coef = tl.load(coef_ptr + row)
    target = tl.load(targets_ptr + row)
    for start in range(0, V, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        valid = cols < V
        x = tl.load(base + cols, mask=valid, other=0.0).to(tl.float32)
        grad = tl.where(cols == target, coef, 0.0) - coef * tl.exp(x - lse)
        tl.store(base + cols, grad.to(logits_ptr.dtype.element_ty), mask=valid)


def _row_stats(logits: torch.Tensor, targets: torch.Tensor, logp, lse, entropy) -> None:
    rows, vocab = logits.shape
    if rows:
        _row_stats_kernel[(rows,)](logits, logits.stride(0), targets, logp, lse, entropy, vocab,
                                   BLOCK=BLOCK_V, num_warps=8)


def _dlogits_(logits: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, coef: torch.Tensor) -> None:
    rows, vocab = logits.shape
    if rows:
        _dlogits_kernel[(rows,)](logits, logits.stride(0), targets, lse, coef, vocab,
                                 BLOCK=BLOCK_V, num_warps=8)


# ----------------------------------------------------------------------------- matmul helpers

_MIXED_ADDMM = [True]
"""Whether this torch takes addmm(fp32 C, bf16 A, bf16 B, out_dtype=fp32); set False on first failure."""


def _accumulate_grad_weight(acc: torch.Tensor, dlogits: torch.Tensor, h: torch.Tensor) -> None:
    """acc (V, H) fp32 += dlogits^T (V, C) @ h (C, H), bf16 operands, fp32 accumulate and store."""
    if _MIXED_ADDMM[0] and dlogits.dtype != acc.dtype:
        try:
            torch.addmm(acc, dlogits.T, h, out_dtype=acc.dtype, out=acc)
            return
        except (RuntimeError, TypeError):  # older torch: fall back to one (V, H) temporary
            _MIXED_ADDMM[0] = False
    acc += (dlogits.T @ h).to(acc.dtype)


def _check_cuda(hidden: torch.Tensor, weight: torch.Tensor) -> None:
    if not hidden.is_cuda or not weight.is_cuda:
        raise ValueError("the triton backend needs CUDA tensors; use backend='torch' on the CPU")


def _matmul_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The operands' dtype for the matmuls: autocast's when it is on (the trainer's bf16 context
    with fp32 weights), else the wider of the two inputs' dtypes."""
    if torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return torch.promote_types(hidden.dtype, weight.dtype)


# ----------------------------------------------------------------------------- token log-probs

def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """logp (N, T) of `targets` and entropy (N, T), fp32, no grad; masked tokens read 0."""
    _check_cuda(hidden, weight)
    n, t = targets.shape
    vocab = weight.shape[0]
    dtype = _matmul_dtype(hidden, weight)
    chunk_size = chunk_size or default_chunk_rows(vocab, dtype.itemsize)
    # autocast off: the out= matmuls below must run in `dtype`, chosen above
    with torch.no_grad(), torch.autocast("cuda", enabled=False):
        index, rows, rows_targets = _valid_rows(hidden, weight, targets, mask)
        rows, weight = rows.to(dtype), weight.to(dtype)
        m = rows.shape[0]
        logp, lse, entropy = (rows.new_empty(m, dtype=torch.float32) for _ in range(3))
        buffer = rows.new_empty(min(chunk_size, max(m, 1)), vocab)
        for start in range(0, m, chunk_size):
            stop = min(start + chunk_size, m)
            logits = buffer[: stop - start]
            torch.mm(rows[start:stop], weight.T, out=logits)
            _row_stats(logits, rows_targets[start:stop], logp[start:stop], lse[start:stop],
                       entropy[start:stop])
        return _scatter_rows(logp, index, n, t), _scatter_rows(entropy, index, n, t)


# ----------------------------------------------------------------------------- fused policy loss

class _PrecomputedGrads(torch.autograd.Function):
    """Attaches gradients computed in the forward pass; backward scales them by grad_output."""

    @staticmethod
    def forward(ctx, rows_hidden, weight, loss, grad_rows, grad_weight):
        ctx.save_for_backward(grad_rows, grad_weight)
        ctx.dtypes = rows_hidden.dtype, weight.dtype
        return loss.detach().clone()

    @staticmethod
    def backward(ctx, grad_output):
        grad_rows, grad_weight = ctx.saved_tensors
        hidden_dtype, weight_dtype = ctx.dtypes
        gh = (grad_rows * grad_output).to(hidden_dtype) if ctx.needs_input_grad[0] else None
        gw = (grad_weight * grad_output).to(weight_dtype) if ctx.needs_input_grad[1] else None
        return gh, gw, None, None, None


def _chunks_of_sequences(rows_per_seq: list[int], chunk_rows: int):
    """(first seq, end seq, first row, end row) of consecutive sequences holding <= chunk_rows
    valid rows (one sequence longer than that forms a chunk alone). Empty sequences are skipped."""
    seq0, row0, rows = 0, 0, 0
    for i, r in enumerate(rows_per_seq):
        if rows and rows + r > chunk_rows:
            yield seq0, i, row0, row0 + rows
            seq0, row0, rows = i, row0 + rows, 0
        rows += r
    if rows:
        yield seq0, len(rows_per_seq), row0, row0 + rows


def _global_normalizer(normalizer: LossNormalizer | None, n: int, tokens: int) -> LossNormalizer:
    """Counts of the whole call (or the caller's global counts), so each chunk's loss is its share."""
    norm = normalizer or LossNormalizer()
    return LossNormalizer(
        num_sequences=norm.num_sequences if norm.num_sequences is not None else float(n),
        num_tokens=norm.num_tokens if norm.num_tokens is not None else float(max(tokens, 1)),
        num_local_tokens=norm.num_local_tokens if norm.num_local_tokens is not None else float(max(tokens, 1)),
        num_processes=norm.num_processes,
    )


def _slice(x: torch.Tensor | None, a: int, b: int) -> torch.Tensor | None:
    return None if x is None else x[a:b]


def fused_policy_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    old_logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    *,
    loss_type: str,
    config: PolicyLossConfig | None = None,
    epsilon_low: float | None = None,
    epsilon_high: float | None = None,
    beta: float | None = None,
    kl_type: str | None = None,
    normalizer: LossNormalizer | None = None,
    max_completion_length: int | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The policy loss `loss_type` from hidden (N, T, H) and lm_head weight (V, H); gradients reach
    `hidden` and `weight`. Arguments and metrics as `rlvr.kernels.reference.fused_policy_loss`.

    chunk_size: most valid-token rows per chunk (whole sequences, at least one; default: a
    1.25 GiB logits buffer, DEFAULT_CHUNK_BYTES).
    """
    _check_cuda(hidden, weight)
    cfg = loss_config(config, epsilon_low=epsilon_low, epsilon_high=epsilon_high, beta=beta,
                      kl_type=kl_type, max_completion_length=max_completion_length)
    n, t = targets.shape
    vocab = weight.shape[0]
    dtype = _matmul_dtype(hidden, weight)
    chunk_size = chunk_size or default_chunk_rows(vocab, dtype.itemsize)
    _validate(loss_type, cfg, n, t, advantages, mask, old_logp, ref_logp, normalizer)
    index, rows_hidden, rows_targets = _valid_rows(hidden, weight, targets, mask)
    # host sync: chunk boundaries at whole sequences need each sequence's valid-token count
    rows_per_seq = (mask > 0).sum(dim=1).tolist()
    m = rows_hidden.shape[0]
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    norm = _global_normalizer(normalizer, n, m)

    # autocast off: the out= matmuls below must run in `dtype`, chosen above
    with torch.no_grad(), torch.autocast("cuda", enabled=False):
        h = rows_hidden.detach().to(dtype)
        w = weight.detach().to(dtype)  # a copy only when autocast or mixed inputs ask for one
        logp, lse, entropy = (h.new_empty(m, dtype=torch.float32) for _ in range(3))
        grad_rows = torch.empty_like(h) if need_grad and hidden.requires_grad else None
        grad_weight = (torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
                       if need_grad and weight.requires_grad else None)
        loss_sum = h.new_zeros((), dtype=torch.float32)
        largest = max((b - a for _, _, a, b in _chunks_of_sequences(rows_per_seq, chunk_size)), default=1)
        buffer = h.new_empty(largest, vocab)
        for s0, s1, r0, r1 in _chunks_of_sequences(rows_per_seq, chunk_size):
            logits = buffer[: r1 - r0]
            torch.mm(h[r0:r1], w.T, out=logits)
            _row_stats(logits, rows_targets[r0:r1], logp[r0:r1], lse[r0:r1], entropy[r0:r1])
            if not need_grad:
                continue
            coef, chunk_loss = _chunk_logp_grad(
                logp[r0:r1], index[r0:r1] - s0 * t, (s1 - s0, t), loss_type, cfg, norm,
                advantages[s0:s1], mask[s0:s1], _slice(old_logp, s0, s1), _slice(ref_logp, s0, s1))
            loss_sum += chunk_loss
            _dlogits_(logits, rows_targets[r0:r1], lse[r0:r1], coef)
            if grad_rows is not None:
                torch.mm(logits, w, out=grad_rows[r0:r1])
            if grad_weight is not None:
                _accumulate_grad_weight(grad_weight, logits, h[r0:r1])
        del buffer
        full_logp = _scatter_rows(logp, index, n, t)
        inp = PolicyLossInput(logp=full_logp, advantages=advantages, mask=mask, old_logp=old_logp,
                              ref_logp=ref_logp, normalizer=normalizer)
        loss_value, metrics = compute_policy_loss(loss_type, inp, cfg)
    # a second host sync (the loss metrics took one), as in the reference
    metrics["entropy/mean"] = entropy.mean().item() if m else 0.0
    if not need_grad:
        return loss_value, metrics
    # the loss returned is the sum of the chunks' shares: the function whose gradient we hold
    loss = _PrecomputedGrads.apply(rows_hidden, weight, loss_sum, grad_rows, grad_weight)
    return loss, metrics


def _chunk_logp_grad(chunk_logp, positions, shape, loss_type, cfg, norm, advantages, mask, old, ref):
    """dL/dlogp (C,) of one chunk's valid tokens and the chunk's share of the loss.

    The chunk's log-probs are laid into a (k, T) leaf (zeros at masked tokens, as the reference
    has them) and the registered loss runs on it with the global counts. No metrics (no host
    sync) here: the final `compute_policy_loss` call reports them.
    """
    with torch.enable_grad():
        leaf = chunk_logp.new_zeros(shape[0] * shape[1])
        leaf[positions] = chunk_logp
        leaf = leaf.view(shape).requires_grad_(True)
        inp = PolicyLossInput(logp=leaf, advantages=advantages, mask=mask, old_logp=old,
                              ref_logp=ref, normalizer=norm)
        loss, _ = compute_policy_loss(loss_type, inp, cfg, with_metrics=False)
        (grad,) = torch.autograd.grad(loss, leaf)
    return grad.reshape(-1)[positions].contiguous(), loss.detach().float()


def _validate(loss_type: str, cfg: PolicyLossConfig, n: int, t: int, advantages, mask, old_logp, ref_logp,
              normalizer) -> None:
    """The loss name and the input shapes, before any work; the variant's own checks run in the
    first chunk's (or, with no chunk, the final) `compute_policy_loss` call. Not the whole loss on
    meta tensors: that host work left the GPU idle on every call (BENCHMARKS.md)."""
    POLICY_LOSSES.get(loss_type)  # an unknown name lists the valid ones
    shapes_only = PolicyLossInput(logp=torch.empty(n, t, device="meta"), advantages=advantages, mask=mask,
                                  old_logp=old_logp, ref_logp=ref_logp, normalizer=normalizer)
    check_policy_loss_input(shapes_only, cfg)
