"""Completions -> scalar rewards: a weighted sum of verifier scores, plus optional shaping terms.

    R_i = w[kind_i] * verify(kind_i, text_i, reference_i).score
        + format_weight * verify("format", text_i).score            (when format_weight != 0)
        + overlong_penalty(|y_i|)                                    (when overlong_max_length > 0)

The soft overlong penalty is DAPO's (arXiv 2503.14476), with L_max = overlong_max_length and
L_cache = overlong_cache: 0 while |y| <= L_max - L_cache, ((L_max - L_cache) - |y|) / L_cache up to
L_max, and -1 beyond.

Verification runs through `verifiers.verify_batch`, one call per kind present in the batch (a
mixed task holds several kinds), so each verifier gets its process pool and hard timeouts.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from rlvr.tasks.base import Example


@dataclass
class RewardConfig:
    weights: dict[str, float] = field(default_factory=dict)
    """Weight per verifier kind (e.g. {math: 1.0, code: 0.5}); a kind not listed weighs 1.0."""
    format_weight: float = 0.0
    """Weight of the `format` verifier (think/answer tags) added to every completion; 0 = off."""
    verifier_options: dict[str, dict] = field(default_factory=dict)
    """Keyword options per verifier kind, e.g. {format: {prompt_opens_think: true}}; a verifier
    rejects options it does not take."""
    overlong_max_length: int = 0
    """L_max (tokens) of DAPO's soft overlong penalty; 0 = off. Usually max_new_tokens."""
    overlong_cache: int = 0
    """L_cache (tokens): the penalty ramps from 0 to -1 over the last L_cache tokens before L_max."""
    timeout_s: float = 10.0
    """Hard timeout (seconds) per verified completion; a timeout scores 0 with a reason."""
    workers: int | None = None
    """Verifier processes; None lets `verifiers.verify_batch` choose."""

    def __post_init__(self) -> None:
        for kind, w in self.weights.items():
            if not math.isfinite(w):
                raise ValueError(f"weights.{kind} must be finite, got {w}")
        if self.overlong_max_length < 0 or self.overlong_cache < 0:
            raise ValueError("overlong_max_length and overlong_cache must be >= 0")
        if self.overlong_max_length and not 0 < self.overlong_cache <= self.overlong_max_length:
            raise ValueError(
                f"overlong_cache must be in (0, overlong_max_length={self.overlong_max_length}] "
                f"when the overlong penalty is on, got {self.overlong_cache}"
            )
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")


@dataclass
class RewardOutput:
    total: list[float]
    """(N) the reward R_i the advantages are computed from."""
    per_verifier: dict[str, list[float]]
    """(N) per term: the raw score of each verifier kind (NaN for completions of another kind),
    `format` (raw format score, always measured) and `overlong` (the penalty, when on). Unweighted."""
    correct: list[bool]
    """(N) the task verifier's `correct` verdict (accuracy)."""
    reasons: list[str] = field(default_factory=list)
    """(N) the task verifier's reason (why a completion scored what it did; for samples)."""


def overlong_penalty(length: int, max_length: int, cache: int) -> float:
    """DAPO soft overlong penalty for a completion of `length` tokens.

    >>> overlong_penalty(10, 20, 5), overlong_penalty(17, 20, 5), overlong_penalty(21, 20, 5)
    (0.0, -0.4, -1.0)
    """
    free = max_length - cache
    if length <= free:
        return 0.0
    if length <= max_length:
        return (free - length) / cache
    return -1.0


def compute_rewards(
    examples: Sequence[Example],
    texts: Sequence[str],
    lengths: Sequence[int],
    truncated: Sequence[bool],
    cfg: RewardConfig,
) -> RewardOutput:
    """Rewards for N completions; `examples[i]` is the problem `texts[i]` answers.

    `truncated` is accepted for reward functions that shape on it; this one does not (truncated
    completions are masked out of the loss by the trainer's `mask_truncated_completions`).
    """
    import verifiers  # light: no torch; imported here so `rlvr.rewards` imports without it

    n = len(examples)
    if not len(texts) == len(lengths) == len(truncated) == n:
        raise ValueError(
            f"compute_rewards: examples ({n}), texts ({len(texts)}), lengths ({len(lengths)}) and "
            f"truncated ({len(truncated)}) must have the same length"
        )
    scores = [0.0] * n
    correct = [False] * n
    reasons = [""] * n
    per_verifier: dict[str, list[float]] = {}
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_kind[ex.kind].append(i)
    for kind, idx in by_kind.items():
        results = verifiers.verify_batch(
            kind, [texts[i] for i in idx], [examples[i].reference for i in idx],
            timeout_s=cfg.timeout_s, workers=cfg.workers, **cfg.verifier_options.get(kind, {}),
        )
        column = [math.nan] * n
        for i, res in zip(idx, results):
            column[i] = float(res.score)
            scores[i] = cfg.weights.get(kind, 1.0) * float(res.score)
            correct[i] = bool(res.correct)
            reasons[i] = res.reason
        per_verifier[kind] = column
    total = list(scores)
    # measured even at weight 0: the format rate is the first signal to read when a run is flat
    fmt = verifiers.verify_batch("format", list(texts), [None] * n, timeout_s=cfg.timeout_s,
                                 workers=cfg.workers, **cfg.verifier_options.get("format", {}))
    per_verifier["format"] = [float(r.score) for r in fmt]
    if cfg.format_weight:
        total = [t + cfg.format_weight * f for t, f in zip(total, per_verifier["format"])]
    if cfg.overlong_max_length:
        pen = [overlong_penalty(L, cfg.overlong_max_length, cfg.overlong_cache) for L in lengths]
        per_verifier["overlong"] = pen
        total = [t + p for t, p in zip(total, pen)]
    return RewardOutput(total=total, per_verifier=per_verifier, correct=correct, reasons=reasons)
