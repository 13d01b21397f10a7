"""Token sampling on the device without a host sync: temperature, top-k, top-p, greedy at
temperature 0; each token's log-prob is taken before the top-k/top-p truncation."""
from __future__ import annotations

import torch

from rlvr.rollout.base import SamplingParams


def sample_tokens(logits: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (N, V) fp32 -> token (N,) and its log-prob under softmax(logits / temperature) (N,).

    Sampling is the exponential race argmax(p / E), E ~ Exp(1) (equivalent to multinomial; it has
    no host sync, so it can live inside a CUDA graph).
    """
    if params.temperature == 0:
        token = logits.argmax(dim=-1)
        return token, logits.log_softmax(dim=-1).gather(1, token[:, None]).squeeze(1)
    scaled = logits / params.temperature
    logp_all = scaled.log_softmax(dim=-1)
    kept = _top_k_top_p(scaled, params.top_k, params.top_p)
    probs = kept.softmax(dim=-1)
    token = (probs / torch.empty_like(probs).exponential_()).argmax(dim=-1)
    return token, logp_all.gather(1, token[:, None]).squeeze(1)


def _top_k_top_p(scaled: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """scaled logits with everything outside the top-k and the top-p nucleus set to -inf."""
    if 0 < top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = scaled.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked above it already hold top_p (the first always stays)
        drop = (probs.cumsum(dim=-1) - probs) > top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        scaled = torch.full_like(scaled, float("-inf")).scatter(1, order, sorted_logits)
    return scaled


FORCE_LOGIT = 1.0e4
"""Far above any logit of a trained or random model, finite in bf16 (so no inf - inf in softmax)."""


def force_token(logits: torch.Tensor, rows: torch.Tensor, token_id: int) -> None:
    """In place: the rows where `rows` (N,) bool is set sample `token_id` (log-prob about 0)."""
    logits[:, token_id] = torch.where(rows, FORCE_LOGIT, logits[:, token_id])
