"""Clipped policy-gradient losses for GRPO and its variants, one registry, one signature.

Every variant is `f(PolicyLossInput, PolicyLossConfig) -> PolicyLossTerms` built from the same
helpers (ratio, clipped surrogate, KL, aggregation), so the trainer never branches on the name.
A variant is tensor math only (no host sync): `compute_policy_loss` adds the metrics with one
host sync, or none with `with_metrics=False` (the fused kernels' per-chunk losses).
Shapes: N sequences, T completion tokens; per-token tensors are (N, T) and `mask` marks the
valid completion tokens.

Split invariance: each micro-batch's loss is its *sum* of per-token (or per-sequence) terms
divided by a count of the *global* batch (`LossNormalizer`), so the losses of every micro-batch
(gradient accumulation) add up to the loss of the whole batch, gradients included. For data
parallelism the returned loss is multiplied by `num_processes`, which undoes the mean that
DDP / ZeRO / FSDP take over processes. So: call backward on each micro-batch's loss as is; do
not divide it by the number of accumulation steps.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch

from .kl import KL_ESTIMATORS, kl_penalty
from rlvr.registry import Registry

MAX_LOG_RATIO = 20.0
"""|log r| is clamped here before exp: an old/new mismatch this large is a bug or a stale
rollout, and exp(>88) overflows fp32 (verl clamps the same way)."""


@dataclass
class PolicyLossConfig:
    epsilon_low: float = 0.2
    """epsilon_low: the ratio is clipped below at 1 - epsilon_low."""
    epsilon_high: float = 0.2
    """epsilon_high: the ratio is clipped above at 1 + epsilon_high (DAPO clip-higher uses 0.28;
    GSPO's sequence ratio wants ~4e-4 / 3e-4 for high / low)."""
    beta: float = 0.0
    """beta: weight of the KL penalty to the reference policy. 0 means no reference model."""
    kl_type: str = "k3"
    """KL estimator: k1, k2 or k3 (see rlvr.algorithms.kl)."""
    max_completion_length: int | None = None
    """L_max (tokens): dr_grpo's constant normaliser N * L_max. Required by dr_grpo only."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon_low < 1.0:
            raise ValueError(f"epsilon_low must be in [0, 1), got {self.epsilon_low}")
        if self.epsilon_high < 0.0:
            raise ValueError(f"epsilon_high must be >= 0, got {self.epsilon_high}")
        if self.beta < 0.0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.kl_type not in KL_ESTIMATORS:
            raise ValueError(f"kl_type {self.kl_type!r} unknown; valid: {', '.join(KL_ESTIMATORS.names())}")
        if self.max_completion_length is not None and self.max_completion_length <= 0:
            raise ValueError(f"max_completion_length must be > 0, got {self.max_completion_length}")


def loss_config(config: PolicyLossConfig | None = None, **fields) -> PolicyLossConfig:
    """`config` as given (the trainer builds it once per run), or one built from the loose keyword
    fields the kernels also accept (fields left None take PolicyLossConfig's defaults); not both."""
    given = {name: value for name, value in fields.items() if value is not None}
    if config is None:
        return PolicyLossConfig(**given)
    if given:
        raise TypeError(f"pass the loss settings as config or as keywords ({', '.join(given)}), not both")
    return config


@dataclass
class LossNormalizer:
    """Counts of the batch the loss is normalised over. None means "this micro-batch is all of it"."""

    num_sequences: float | None = None
    """Sequences in the global batch (every micro-batch of every process): grpo, gspo, dr_grpo."""
    num_tokens: float | None = None
    """Valid completion tokens in the global batch: dapo."""
    num_local_tokens: float | None = None
    """Valid tokens in this process's batch (all its accumulation micro-batches): bnpo, whose
    token mean is per process and then averaged over processes."""
    num_processes: int = 1
    """Processes whose gradients the distributed backend averages (world size)."""


@dataclass
class PolicyLossInput:
    logp: torch.Tensor
    """(N, T) log pi_theta of the sampled tokens; the only input gradients flow through."""
    advantages: torch.Tensor
    """(N,) advantage of each sequence."""
    mask: torch.Tensor
    """(N, T) 1/True for valid completion tokens, 0/False for padding and masked-out tokens."""
    old_logp: torch.Tensor | None = None
    """(N, T) log pi_old at sampling time; None means on-policy (ratio exp(logp - logp.detach()) = 1)."""
    ref_logp: torch.Tensor | None = None
    """(N, T) log pi_ref of the frozen reference policy; needed when beta > 0."""
    normalizer: LossNormalizer | None = None
    """Global batch counts for split-invariant losses; None: this micro-batch is the whole batch."""


@dataclass
class _Counts:
    sequences: float
    tokens: float | torch.Tensor
    local_tokens: float | torch.Tensor
    processes: int


@dataclass
class PolicyLossTerms:
    """What a variant returns: its loss and the tensors its metrics are computed from, no sync."""

    loss: torch.Tensor
    """Scalar to backpropagate: policy_loss + kl_loss."""
    policy_loss: torch.Tensor
    """Scalar share of the clipped surrogate term."""
    kl_loss: torch.Tensor
    """Scalar share of beta * KL (zero when beta = 0)."""
    ratio: torch.Tensor
    """(N, T) the ratio that was clipped (per token, or the sequence ratio broadcast to its tokens)."""
    advantages: torch.Tensor
    """(N, 1) advantages in the ratio's dtype."""
    mask: torch.Tensor
    """(N, T) float mask of valid tokens."""
    kl: torch.Tensor | None = None
    """(N, T) per-token KL estimate; None when beta = 0."""


PolicyLossFn = Callable[[PolicyLossInput, PolicyLossConfig], PolicyLossTerms]
POLICY_LOSSES: Registry[PolicyLossFn] = Registry("policy loss")


def register_policy_loss(name: str) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Decorator: register f(PolicyLossInput, PolicyLossConfig) -> PolicyLossTerms under `name`.

    f gets masked tokens already zeroed. The fused kernels call it once per chunk of whole
    sequences, so it must not sync with the host (no .item(), no data-dependent Python branches)
    and must be split invariant (module doc)."""
    return POLICY_LOSSES.register(name)


def compute_policy_loss(
    name: str, inp: PolicyLossInput, cfg: PolicyLossConfig | None = None, *, with_metrics: bool = True
) -> tuple[torch.Tensor, dict[str, float]]:
    """The scalar loss to backpropagate for this micro-batch, and its metrics (see module doc).

    with_metrics=False: metrics are {} and nothing syncs with the host (the fused kernels call
    it once per chunk).
    """
    fn = POLICY_LOSSES.get(name)
    cfg = cfg or PolicyLossConfig()
    check_policy_loss_input(inp, cfg)
    terms = fn(_zero_masked(inp), cfg)
    return terms.loss, (_loss_metrics(terms, cfg) if with_metrics else {})


# ----------------------------------------------------------------------------- variants

@register_policy_loss("grpo")
def grpo_loss(inp: PolicyLossInput, cfg: PolicyLossConfig):
    """L = -(1/N) sum_i (1/|o_i|) sum_t [min(r A, clip(r) A) - beta KL] (GRPO, arXiv 2402.03300)."""
    return clipped_surrogate_loss(inp, cfg, token_log_ratio(inp), seq_mean_token_mean)


@register_policy_loss("bnpo")
def bnpo_loss(inp: PolicyLossInput, cfg: PolicyLossConfig):
    """L = -(1/sum_local |o_i|) sum_i sum_t [...]: token mean over this process's batch (TRL bnpo)."""
    return clipped_surrogate_loss(inp, cfg, token_log_ratio(inp), local_token_mean)


@register_policy_loss("dapo")
def dapo_loss(inp: PolicyLossInput, cfg: PolicyLossConfig):
    """L = -(1/sum_global |o_i|) sum_i sum_t [...]: token mean over the global batch (DAPO, arXiv 2503.14476)."""
    return clipped_surrogate_loss(inp, cfg, token_log_ratio(inp), global_token_mean)


@register_policy_loss("dr_grpo")
def dr_grpo_loss(inp: PolicyLossInput, cfg: PolicyLossConfig):
    """L = -(1/(N L_max)) sum_i sum_t [...]: constant normaliser, no length bias (Dr. GRPO, arXiv 2503.20783)."""
    _check_dr_grpo(cfg, inp.logp.shape[1])
    return clipped_surrogate_loss(inp, cfg, token_log_ratio(inp), constant_length_mean)


@register_policy_loss("gspo")
def gspo_loss(inp: PolicyLossInput, cfg: PolicyLossConfig):
    """s_i = exp((1/|o_i|) sum_t log r_it); L = -(1/N) sum_i min(s_i A_i, clip(s_i) A_i) (GSPO, arXiv 2507.18071).

    Equal to grpo on-policy (value and gradient); differs once old_logp != logp. The KL term,
    when beta > 0, is the per-sequence token mean as in grpo.
    """
    return clipped_surrogate_loss(inp, cfg, sequence_log_ratio(inp), seq_mean_token_mean)


# ----------------------------------------------------------------------------- shared helpers

def token_log_ratio(inp: PolicyLossInput) -> torch.Tensor:
    """(N, T) log r_t = logp - old_logp; on-policy, logp - logp.detach() (value 0, gradient 1)."""
    old = inp.logp.detach() if inp.old_logp is None else inp.old_logp.detach().to(inp.logp.dtype)
    return (inp.logp - old).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)


def sequence_log_ratio(inp: PolicyLossInput) -> torch.Tensor:
    """(N, T) log s_i = mean of log r_t over sequence i's valid tokens, broadcast to its tokens."""
    mask = _float_mask(inp)
    log_r = token_log_ratio(inp) * mask
    per_seq = log_r.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (N,)
    return per_seq.unsqueeze(1).expand_as(log_r)


def clipped_surrogate_loss(
    inp: PolicyLossInput,
    cfg: PolicyLossConfig,
    log_ratio: torch.Tensor,
    aggregate: Callable[[torch.Tensor, torch.Tensor, _Counts, PolicyLossConfig], torch.Tensor],
) -> PolicyLossTerms:
    """-min(r A, clip(r, 1-eps_low, 1+eps_high) A) + beta KL per token, then `aggregate`."""
    mask = _float_mask(inp)
    counts = _resolve_counts(inp, mask)
    ratio = torch.exp(log_ratio)  # (N, T)
    adv = inp.advantages.detach().to(ratio.dtype).unsqueeze(1)  # (N, 1)
    clipped = ratio.clamp(1.0 - cfg.epsilon_low, 1.0 + cfg.epsilon_high)
    pg = -torch.minimum(ratio * adv, clipped * adv)  # (N, T)
    policy_loss = aggregate(pg, mask, counts, cfg)
    kl = None
    if cfg.beta > 0.0:
        kl = kl_penalty(inp.logp, inp.ref_logp, cfg.kl_type)
        kl_loss = cfg.beta * aggregate(kl, mask, counts, cfg)
    else:
        kl_loss = policy_loss.new_zeros(())
    return PolicyLossTerms(policy_loss + kl_loss, policy_loss, kl_loss, ratio, adv, mask, kl)


# Aggregations: (values (N, T), mask (N, T), counts, cfg) -> this micro-batch's share of the
# global loss, already multiplied by num_processes (see module doc).

def seq_mean_token_mean(values, mask, counts: _Counts, cfg) -> torch.Tensor:
    """sum_i (sum_t v_it / |o_i|) / N_global."""
    per_seq = (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return per_seq.sum() * (counts.processes / counts.sequences)


def local_token_mean(values, mask, counts: _Counts, cfg) -> torch.Tensor:
    """sum v / (tokens of this process's batch); DDP's mean over processes completes bnpo."""
    return (values * mask).sum() / counts.local_tokens


def global_token_mean(values, mask, counts: _Counts, cfg) -> torch.Tensor:
    """sum v / (tokens of the global batch)."""
    return (values * mask).sum() * (counts.processes / counts.tokens)


def constant_length_mean(values, mask, counts: _Counts, cfg: PolicyLossConfig) -> torch.Tensor:
    """sum v / (N_global * L_max)."""
    return (values * mask).sum() * (counts.processes / (counts.sequences * cfg.max_completion_length))


# ----------------------------------------------------------------------------- checks, counts, metrics

def _zero_masked(inp: PolicyLossInput) -> PolicyLossInput:
    """Zero logp/old_logp/ref_logp at masked tokens before any math: padding often holds -inf or
    garbage, and 0 * inf = nan would otherwise leak into the loss or (through exp) the gradient."""
    valid = inp.mask > 0

    def clean(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))

    return dataclasses.replace(inp, logp=clean(inp.logp), old_logp=clean(inp.old_logp), ref_logp=clean(inp.ref_logp))


def _float_mask(inp: PolicyLossInput) -> torch.Tensor:
    return inp.mask.to(inp.logp.dtype)


def _resolve_counts(inp: PolicyLossInput, mask: torch.Tensor) -> _Counts:
    norm = inp.normalizer or LossNormalizer()
    if norm.num_processes > 1 and (norm.num_sequences is None or norm.num_tokens is None):
        raise ValueError("normalizer.num_sequences and num_tokens must be given (global counts) "
                         "when num_processes > 1")
    # A float() of a tensor count here would be a host sync; counts arrive as Python numbers.
    local_tokens = None
    if norm.num_tokens is None or norm.num_local_tokens is None:
        local_tokens = mask.sum().clamp(min=1.0)  # stays a tensor: no sync
    return _Counts(
        sequences=float(norm.num_sequences) if norm.num_sequences is not None else float(mask.shape[0]),
        tokens=norm.num_tokens if norm.num_tokens is not None else local_tokens,
        local_tokens=norm.num_local_tokens if norm.num_local_tokens is not None else local_tokens,
        processes=norm.num_processes,
    )


def check_policy_loss_input(inp: PolicyLossInput, cfg: PolicyLossConfig) -> None:
    """Shapes and settings only (reads no values): what every variant needs."""
    if inp.logp.dim() != 2:
        raise ValueError(f"logp must be (N, T), got shape {tuple(inp.logp.shape)}")
    n, t = inp.logp.shape
    if tuple(inp.mask.shape) != (n, t):
        raise ValueError(f"mask shape {tuple(inp.mask.shape)} != logp shape {(n, t)}")
    if tuple(inp.advantages.shape) != (n,):
        raise ValueError(f"advantages must be (N,) = ({n},), got {tuple(inp.advantages.shape)}")
    for name in ("old_logp", "ref_logp"):
        other = getattr(inp, name)
        if other is not None and tuple(other.shape) != (n, t):
            raise ValueError(f"{name} shape {tuple(other.shape)} != logp shape {(n, t)}")
    if cfg.beta > 0.0 and inp.ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (the reference policy's log-probs)")
    norm = inp.normalizer
    if norm is not None:
        if norm.num_processes < 1:
            raise ValueError(f"normalizer.num_processes must be >= 1, got {norm.num_processes}")
        for name in ("num_sequences", "num_tokens", "num_local_tokens"):
            value = getattr(norm, name)
            if value is not None and value <= 0:
                raise ValueError(f"normalizer.{name} must be > 0, got {value}")


def _check_dr_grpo(cfg: PolicyLossConfig, t: int) -> None:
    if cfg.max_completion_length is None:
        raise ValueError("loss dr_grpo needs max_completion_length (its constant normaliser L_max)")
    if t > cfg.max_completion_length:
        raise ValueError(f"completions have {t} tokens > max_completion_length {cfg.max_completion_length}")


def _loss_metrics(terms: PolicyLossTerms, cfg: PolicyLossConfig) -> dict[str, float]:
    """Loss shares (add over micro-batches) and token means over this micro-batch (average them)."""
    ratio, adv, mask, kl = terms.ratio, terms.advantages, terms.mask, terms.kl
    with torch.no_grad():
        tokens = mask.sum().clamp(min=1.0)
        low = (ratio < 1.0 - cfg.epsilon_low) & (adv < 0)
        high = (ratio > 1.0 + cfg.epsilon_high) & (adv > 0)
        valid = mask > 0
        stats = {
            "loss/total": terms.loss,
            "loss/policy": terms.policy_loss,
            "loss/kl": terms.kl_loss,
            "clip_ratio/low": (low.to(mask.dtype) * mask).sum() / tokens,
            "clip_ratio/high": (high.to(mask.dtype) * mask).sum() / tokens,
            "clip_ratio/region": ((low | high).to(mask.dtype) * mask).sum() / tokens,
            "ratio/mean": (ratio * mask).sum() / tokens,
            # no valid token gives +-inf here; replaced by 1 below (an `if valid.any()` would sync)
            "ratio/min": torch.where(valid, ratio, torch.inf).amin(),
            "ratio/max": torch.where(valid, ratio, -torch.inf).amax(),
        }
        if kl is not None:
            stats["kl/mean"] = (kl * mask).sum() / tokens
        values = torch.stack([v.detach().to(torch.float64).reshape(()) for v in stats.values()])
        values = torch.where(values.isinf(), torch.ones_like(values), values)
        return dict(zip(stats, values.tolist()))  # one host sync for every metric
