"""Per-token estimators of KL(pi_theta || pi_ref) from the sampled tokens' log-probs.

With d = ref_logp - logp (log pi_ref/pi_theta at the sampled token, sampled from pi_theta):
  k1 = -d                     unbiased, high variance, can be negative
  k2 = d^2 / 2                biased, low variance
  k3 = exp(d) - d - 1         unbiased, low variance, always >= 0 (Schulman, "Approximating KL
                              divergence", 2020; the estimator GRPO uses, 2402.03300)
Gradients flow through `logp` only; `ref_logp` comes from a frozen model.
"""
from __future__ import annotations

from typing import Callable

import torch

from rlvr.registry import Registry

KLEstimator = Callable[[torch.Tensor], torch.Tensor]
KL_ESTIMATORS: Registry[KLEstimator] = Registry("KL estimator")
"""Maps a name to f(d) where d = ref_logp - logp, elementwise."""


@KL_ESTIMATORS.register("k1")
def _k1(d: torch.Tensor) -> torch.Tensor:
    # k1 = log pi_theta - log pi_ref
    return -d


@KL_ESTIMATORS.register("k2")
def _k2(d: torch.Tensor) -> torch.Tensor:
    # k2 = (log pi_theta - log pi_ref)^2 / 2
    return 0.5 * d.square()


@KL_ESTIMATORS.register("k3")
def _k3(d: torch.Tensor) -> torch.Tensor:
    # k3 = exp(ref - logp) - (ref - logp) - 1
    return torch.expm1(d) - d


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token KL estimate, same shape as `logp`. `ref_logp` is treated as a constant."""
    if logp.shape != ref_logp.shape:
        raise ValueError(f"ref_logp shape {tuple(ref_logp.shape)} != logp shape {tuple(logp.shape)}")
    estimator = KL_ESTIMATORS.get(kind)
    return estimator(ref_logp.detach().to(logp.dtype) - logp)
