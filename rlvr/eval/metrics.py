"""Sample-based accuracy estimators: pass@k, majority vote, maj@k.

Answers are grouped by *verifier equivalence* ("0.5" and "\\frac{1}{2}" are one answer), not by
string identity, so a vote is never split by formatting.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Callable, Sequence

Equivalence = Callable[[str, str], bool]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021, arXiv 2107.03374): 1 - C(n-c, k) / C(n, k).

    Computed as 1 - prod_{i=n-c+1..n} (1 - k/i), which never forms the huge binomials.

    >>> round(pass_at_k(10, 3, 1), 3)
    0.3
    >>> pass_at_k(5, 0, 5), pass_at_k(5, 1, 5)
    (0.0, 1.0)
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"pass_at_k: {name} must be an int, got {value!r}")
    if n < 1:
        raise ValueError(f"pass_at_k: n must be >= 1 samples, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k must be in [1, n={n}], got {k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def default_equivalence(kind: str = "math") -> Equivalence:
    """The verifiers' equivalence for `kind` (imported lazily: verifiers may load math-verify)."""
    from verifiers import answers_equivalent

    return lambda a, b: answers_equivalent(a, b, kind=kind)


def group_answers(answers: Sequence[str | None], equivalent: Equivalence | None = None) -> list[int]:
    """Group id per answer (first-seen order); None (no answer extracted) gets -1 and never votes.

    Identical strings are matched without calling `equivalent` (it may be slow: math-verify).
    """
    equivalent = equivalent or default_equivalence()
    representatives: list[str] = []
    by_string: dict[str, int] = {}
    ids = []
    for answer in answers:
        if answer is None or not str(answer).strip():
            ids.append(-1)
            continue
        key = str(answer).strip()
        if key not in by_string:
            match = next((g for g, rep in enumerate(representatives) if equivalent(rep, key)), None)
            if match is None:
                representatives.append(key)
                match = len(representatives) - 1
            by_string[key] = match
        ids.append(by_string[key])
    return ids


@dataclass
class VoteResult:
    """The winner of a (weighted) vote."""

    answer: str | None
    """A representative string of the winning group (its first member); None if nobody voted."""
    share: float
    """The winning group's weight divided by the total weight of all votes (0 when nobody voted)."""
    index: int | None
    """Position in the input of the winning answer's representative."""
    group_weights: dict[int, float]
    """Weight per group id (as `group_answers` numbers them)."""


def majority_vote(
    answers: Sequence[str | None],
    weights: Sequence[float] | None = None,
    equivalent: Equivalence | None = None,
    *,
    group_ids: Sequence[int] | None = None,
) -> VoteResult:
    """Self-consistency vote: the answer group with the largest total weight wins.

    `weights=None` counts each answer once (majority); otherwise each answer adds its weight
    (weighted vote, e.g. by a reward model's score). Ties go to the group seen first.
    `group_ids` (from `group_answers`) skips re-grouping when the caller already has them.

    >>> majority_vote(["2", "3", "2"], equivalent=str.__eq__).answer
    '2'
    """
    if weights is not None and len(weights) != len(answers):
        raise ValueError(f"majority_vote: {len(weights)} weights for {len(answers)} answers")
    ids = list(group_ids) if group_ids is not None else group_answers(answers, equivalent)
    if len(ids) != len(answers):
        raise ValueError(f"majority_vote: {len(ids)} group ids for {len(answers)} answers")
    totals: dict[int, float] = {}
    first_index: dict[int, int] = {}
    for i, g in enumerate(ids):
        if g < 0:
            continue
        w = 1.0 if weights is None else float(weights[i])
        if w < 0 or math.isnan(w):
            raise ValueError(f"majority_vote: weight {i} is {w}; weights must be >= 0")
        totals[g] = totals.get(g, 0.0) + w
        first_index.setdefault(g, i)
    if not totals:
        return VoteResult(None, 0.0, None, {})
    winner = max(totals, key=lambda g: (totals[g], -first_index[g]))
    total = sum(totals.values())
    share = totals[winner] / total if total > 0 else 0.0
    idx = first_index[winner]
    return VoteResult(str(answers[idx]).strip(), share, idx, totals)


def vote_accuracy(group_ids: Sequence[int], correct: Sequence[bool], weights: Sequence[float] | None = None) -> float:
    """Expected correctness of a vote over these samples, ties broken uniformly at random.

    A group is correct when its members are (they agree, being equivalent answers).
    """
    totals: dict[int, float] = {}
    group_correct: dict[int, bool] = {}
    for i, g in enumerate(group_ids):
        if g < 0:
            continue
        totals[g] = totals.get(g, 0.0) + (1.0 if weights is None else float(weights[i]))
        group_correct[g] = group_correct.get(g, False) or bool(correct[i])
    if not totals:
        return 0.0
    best = max(totals.values())
    tied = [g for g, w in totals.items() if w == best]
    return sum(group_correct[g] for g in tied) / len(tied)


def maj_at_k(
    answers: Sequence[str | None],
    correct: Sequence[bool],
    k: int,
    *,
    equivalent: Equivalence | None = None,
    group_ids: Sequence[int] | None = None,
    max_subsets: int = 1000,
    seed: int = 0,
) -> float:
    """maj@k: expected accuracy of a majority vote over k of the n samples.

    Averages over every k-subset when there are at most `max_subsets` of them, else over
    `max_subsets` random ones (seeded). k = n is the plain vote over all samples.
    """
    n = len(answers)
    if len(correct) != n:
        raise ValueError(f"maj_at_k: {len(correct)} correctness flags for {n} answers")
    if not 1 <= k <= n:
        raise ValueError(f"maj_at_k: k must be in [1, n={n}], got {k}")
    ids = list(group_ids) if group_ids is not None else group_answers(answers, equivalent)
    subsets = sample_subsets(n, k, max_subsets, seed)
    return sum(vote_accuracy([ids[i] for i in s], [correct[i] for i in s]) for s in subsets) / len(subsets)


def sample_subsets(n: int, k: int, max_subsets: int, seed: int) -> list[tuple[int, ...]]:
    """All k-subsets of range(n) if there are few enough, else `max_subsets` random ones."""
    if math.comb(n, k) <= max_subsets:
        return list(itertools.combinations(range(n), k))
    rng = random.Random(seed)
    return [tuple(sorted(rng.sample(range(n), k))) for _ in range(max_subsets)]
