"""Torch reference of the fused path: policy loss from hidden states and the lm_head weight
without ever holding the (N, T, V) logits.

Tokens are processed in chunks of `chunk_size` rows: logits = h @ W^T in fp32 (fp64 when the
inputs are fp64), log-softmax through logsumexp, the target's log-prob and the entropy. Only
(N, T) log-probs leave the chunk loop; the policy loss on them is `rlvr.algorithms.losses`
itself (same code, not a copy), and the custom autograd Function below recomputes each chunk's
logits in backward to turn dL/dlogp into grad_hidden and grad_weight:
    d logp_target / d logits = onehot(target) - softmax(logits)
Peak extra memory is O(chunk_size * V) plus O(N * T). Only valid (mask > 0) tokens are computed.

Sampling temperature: logits / tau = (h / tau) W^T, so pass `hidden / tau`.
Shapes: N sequences, T tokens, H hidden, V vocab; M = valid tokens (rows).
"""
from __future__ import annotations

import torch

from rlvr.algorithms.losses import LossNormalizer, PolicyLossConfig, PolicyLossInput, compute_policy_loss, loss_config

DEFAULT_CHUNK_ELEMENTS = 1 << 25
"""Default chunk: about 32M logits (128 MiB in fp32) per chunk, i.e. 220 rows at V = 151936."""


def default_chunk_size(vocab_size: int) -> int:
    return max(1, DEFAULT_CHUNK_ELEMENTS // vocab_size)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)  # bf16/fp16/fp32 -> fp32, fp64 stays


class ChunkedTargetLogprob(torch.autograd.Function):
    """rows of hidden (M, H), weight (V, H), targets (M,) -> logp (M,), entropy (M,) (entropy: no grad)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: int):
        # autocast (the trainer's bf16) would run the matmuls in bf16: logits must stay fp32
        with torch.autocast(hidden.device.type, enabled=False):
            return ChunkedTargetLogprob._forward(ctx, hidden, weight, targets, chunk_size)

    @staticmethod
    def _forward(ctx, hidden, weight, targets, chunk_size):
        dtype = _compute_dtype(hidden.dtype)
        w = weight.to(dtype)  # one (V, H) copy when the weight is bf16; none in fp32
        m = hidden.shape[0]
        logp = hidden.new_empty(m, dtype=dtype)
        entropy = hidden.new_empty(m, dtype=dtype)
        lse = hidden.new_empty(m, dtype=dtype)
        for start in range(0, m, chunk_size):
            rows = slice(start, start + chunk_size)
            logits = hidden[rows].to(dtype) @ w.T  # (chunk, V)
            chunk_lse = torch.logsumexp(logits, dim=-1)
            probs = torch.exp(logits - chunk_lse.unsqueeze(1))
            # H = -sum p log p = lse - sum p * logits
            entropy[rows] = chunk_lse - (probs * logits).sum(dim=-1)
            logp[rows] = logits.gather(1, targets[rows].unsqueeze(1)).squeeze(1) - chunk_lse
            lse[rows] = chunk_lse
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.chunk_size = chunk_size
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp: torch.Tensor, _grad_entropy: torch.Tensor | None):
        with torch.autocast(grad_logp.device.type, enabled=False):
            return ChunkedTargetLogprob._backward(ctx, grad_logp)

    @staticmethod
    def _backward(ctx, grad_logp):
        hidden, weight, targets, lse = ctx.saved_tensors
        dtype = lse.dtype
        w = weight.to(dtype)
        grad_hidden = torch.zeros_like(hidden, dtype=dtype) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(w) if ctx.needs_input_grad[1] else None
        grad_logp = grad_logp.to(dtype)
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            rows = slice(start, start + ctx.chunk_size)
            h = hidden[rows].to(dtype)
            probs = torch.exp(h @ w.T - lse[rows].unsqueeze(1))  # recomputed, never stored
            g = grad_logp[rows].unsqueeze(1)
            # dL/dlogits = g * (onehot - softmax)
            grad_logits = -g * probs
            grad_logits.scatter_add_(1, targets[rows].unsqueeze(1), g)
            if grad_hidden is not None:
                grad_hidden[rows] = grad_logits @ w
            if grad_weight is not None:
                grad_weight += grad_logits.T @ h
        return (
            grad_hidden.to(hidden.dtype) if grad_hidden is not None else None,
            grad_weight.to(weight.dtype) if grad_weight is not None else None,
            None,
            None,
        )


def _valid_rows(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None):
    """Flat indices of valid tokens (M,), and their hidden rows (M, H) and targets (M,)."""
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be (N, T, H), got shape {tuple(hidden.shape)}")
    n, t, h = hidden.shape
    if weight.dim() != 2 or weight.shape[1] != h:
        raise ValueError(f"weight must be (V, H) with H = {h}, got shape {tuple(weight.shape)}")
    if tuple(targets.shape) != (n, t):
        raise ValueError(f"targets shape {tuple(targets.shape)} != (N, T) = {(n, t)}")
    if mask is not None and tuple(mask.shape) != (n, t):
        raise ValueError(f"mask shape {tuple(mask.shape)} != (N, T) = {(n, t)}")
    flat_mask = torch.ones(n * t, dtype=torch.bool, device=hidden.device) if mask is None else mask.reshape(-1) > 0
    # nonzero() is a host sync; fine for the reference, which skips padded tokens with it
    index = flat_mask.nonzero().squeeze(1)
    rows_targets = targets.reshape(-1)[index].long()
    vocab = weight.shape[0]
    if rows_targets.numel() and (rows_targets.min() < 0 or rows_targets.max() >= vocab):
        raise ValueError(f"targets of valid tokens must be in [0, V={vocab}); got "
                         f"[{int(rows_targets.min())}, {int(rows_targets.max())}]")
    return index, hidden.reshape(n * t, h)[index], rows_targets


def _scatter_rows(values: torch.Tensor, index: torch.Tensor, n: int, t: int) -> torch.Tensor:
    """(M,) values of valid tokens -> (N, T) with zeros at masked tokens (differentiable)."""
    full = values.new_zeros(n * t)
    return full.index_put((index,), values).reshape(n, t)


def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """logp (N, T) of `targets` and entropy (N, T) of the full distribution, no grad.

    Tokens where `mask` is 0 are skipped and read 0 in both outputs. fp32 (fp64 for fp64 inputs).
    """
    n, t = targets.shape
    chunk_size = chunk_size or default_chunk_size(weight.shape[0])
    with torch.no_grad():
        index, rows, rows_targets = _valid_rows(hidden, weight, targets, mask)
        logp, entropy = ChunkedTargetLogprob.apply(rows, weight, rows_targets, chunk_size)
        return _scatter_rows(logp, index, n, t), _scatter_rows(entropy, index, n, t)


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
    """The policy loss `loss_type` of `rlvr.algorithms.losses` computed from hidden (N, T, H) and
    lm_head weight (V, H); gradients reach `hidden` and `weight` only.

    targets (N, T): the sampled token ids (position t's hidden state predicts targets[:, t]).
    config: the loss settings (`PolicyLossConfig`); or the loose keywords epsilon_low,
    epsilon_high, beta, kl_type, max_completion_length, never both.
    Metrics: those of `compute_policy_loss` plus `entropy/mean` over valid tokens.
    """
    cfg = loss_config(config, epsilon_low=epsilon_low, epsilon_high=epsilon_high, beta=beta,
                      kl_type=kl_type, max_completion_length=max_completion_length)
    n, t = targets.shape
    chunk_size = chunk_size or default_chunk_size(weight.shape[0])
    index, rows, rows_targets = _valid_rows(hidden, weight, targets, mask)
    rows_logp, rows_entropy = ChunkedTargetLogprob.apply(rows, weight, rows_targets, chunk_size)
    logp = _scatter_rows(rows_logp, index, n, t)
    inp = PolicyLossInput(logp=logp, advantages=advantages, mask=mask, old_logp=old_logp,
                          ref_logp=ref_logp, normalizer=normalizer)
    loss, metrics = compute_policy_loss(loss_type, inp, cfg)
    # a second host sync (the loss metrics took one); the reference is not the fast path
    metrics["entropy/mean"] = rows_entropy.mean().item() if rows_entropy.numel() else 0.0
    return loss, metrics
