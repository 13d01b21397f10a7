"""Accuracy against compute: best-of-N / vote curves from a pool of samples, per difficulty level,
and the compute-optimal choice.

A *pool* holds n_max sampled solutions of one problem with their verified correctness, answer
groups, token counts and scorer scores. Curves for N = 1, 2, 4, ... are estimated by subsampling
N of the pool (every subset when there are few, else `draws` random ones) and averaging, which
is far cheaper and less noisy than sampling afresh for every N (search-and-learn does the same).
Live search methods (beam, MCTS, adaptive) give `Point`s directly: one per method and budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from rlvr.eval.metrics import group_answers, pass_at_k, sample_subsets, vote_accuracy


@dataclass
class SamplePool:
    """n sampled solutions of one problem."""

    difficulty: int
    """The problem's difficulty level."""
    group_ids: list[int]
    """Answer group of each sample (verifier equivalence; -1 = no answer)."""
    correct: list[bool]
    """Verified correctness of each sample."""
    tokens: list[int]
    """Generated tokens of each sample."""
    scores: dict[str, list[float]] = field(default_factory=dict)
    """Scorer name (orm, prm, ...) -> score of each sample."""


@dataclass
class Point:
    """Accuracy and mean tokens of one method at one budget, over a set of problems."""

    method: str
    n: int
    accuracy: float
    tokens: float
    difficulty: int | None = None
    """None: all levels together."""
    problems: int = 0


def powers_of_two(limit: int) -> list[int]:
    """1, 2, 4, ... up to `limit` (inclusive when it is a power of two)."""
    return [2 ** i for i in range(int(math.log2(limit)) + 1)] if limit >= 1 else []


def best_of_n_accuracy(scores: list[float], correct: list[bool]) -> float:
    """Correctness of the top-scored sample; ties shared uniformly."""
    top = max(scores)
    tied = [c for s, c in zip(scores, correct) if s == top]
    return sum(tied) / len(tied)


def pool_methods(pool: SamplePool) -> list[str]:
    names = ["pass@N", "majority"]
    for scorer in sorted(pool.scores):
        names += [f"best_of_n[{scorer}]", f"weighted_vote[{scorer}]"]
    return names


def pool_accuracy(method: str, pool: SamplePool, subset: tuple[int, ...]) -> float:
    correct = [pool.correct[i] for i in subset]
    if method == "pass@N":
        return float(any(correct))
    groups = [pool.group_ids[i] for i in subset]
    if method == "majority":
        return vote_accuracy(groups, correct)
    kind, scorer = method.rstrip("]").split("[")
    scores = [pool.scores[scorer][i] for i in subset]
    if kind == "best_of_n":
        return best_of_n_accuracy(scores, correct)
    if kind == "weighted_vote":
        return vote_accuracy(groups, correct, scores)
    raise ValueError(f"unknown pool method {method!r}; valid: {', '.join(pool_methods(pool))}")


def pool_curves(pools: list[SamplePool], ns: list[int] | None = None, draws: int = 64, seed: int = 0,
                by_difficulty: bool = True) -> list[Point]:
    """Points for every pool method at every N, over all problems and (optionally) per level."""
    if not pools:
        raise ValueError("no sample pools")
    n_max = min(len(p.correct) for p in pools)
    ns = ns or powers_of_two(n_max)
    if any(n > n_max or n < 1 for n in ns):
        raise ValueError(f"N must be in [1, {n_max}] (the smallest pool), got {ns}")
    levels = [None] + (sorted({p.difficulty for p in pools}) if by_difficulty else [])
    points = []
    for level in levels:
        chosen = [p for p in pools if level is None or p.difficulty == level]
        for method in pool_methods(chosen[0]):
            for n in ns:
                acc, tok = _mean_over_subsets(method, chosen, n, draws, seed)
                points.append(Point(method, n, acc, tok, level, len(chosen)))
    return points


def _mean_over_subsets(method: str, pools: list[SamplePool], n: int, draws: int, seed: int) -> tuple[float, float]:
    accs, toks = [], []
    for j, pool in enumerate(pools):
        size = len(pool.correct)
        if method == "pass@N":  # exact, no subsampling needed
            accs.append(pass_at_k(size, sum(pool.correct), n))
            toks.append(n * sum(pool.tokens) / size)
            continue
        subsets = sample_subsets(size, n, draws, seed + j)
        accs.append(sum(pool_accuracy(method, pool, s) for s in subsets) / len(subsets))
        toks.append(sum(sum(pool.tokens[i] for i in s) for s in subsets) / len(subsets))
    return sum(accs) / len(accs), sum(toks) / len(toks)


def scorer_auc(pools: list[SamplePool], scorer: str) -> float | None:
    """Discrimination of a scorer: the probability that a correct sample outscores an incorrect
    sample of the same problem (ties count half), over all such pairs. None when no problem has
    both. Best-of-N can only beat majority vote where this is high (the chapter's coverage vs
    discrimination)."""
    return within_problem_auc([(pool.scores[scorer], pool.correct) for pool in pools])


def within_problem_auc(groups: list[tuple[list[float], list[bool]]]) -> float | None:
    """P(a correct item outscores an incorrect one of the same group), ties half, over every such
    pair of every (scores, correct) group; None without a pair."""
    wins = pairs = 0.0
    for scores, correct in groups:
        good = [s for s, c in zip(scores, correct) if c]
        bad = [s for s, c in zip(scores, correct) if not c]
        wins += sum((g > b) + 0.5 * (g == b) for g in good for b in bad)
        pairs += len(good) * len(bad)
    return wins / pairs if pairs else None


def auc_interval(groups: list[tuple[list[float], list[bool]]], level: float = 0.9, resamples: int = 1000,
                 seed: int = 0) -> tuple[float, float] | None:
    """Bootstrap interval of `within_problem_auc`, resampling whole groups (problems) with
    replacement: pairs of one problem are not independent, so problems are the unit of noise.
    None without a pair."""
    import random

    if within_problem_auc(groups) is None:
        return None
    rng = random.Random(seed)
    draws = sorted(a for a in (within_problem_auc(rng.choices(groups, k=len(groups))) for _ in range(resamples))
                   if a is not None)
    cut = (1.0 - level) / 2
    return draws[int(cut * (len(draws) - 1))], draws[int(round((1.0 - cut) * (len(draws) - 1)))]


def score_spread(groups: list[tuple[list[float], list[bool]]]) -> dict[str, float]:
    """How much scores vary within a problem (mean of each problem's standard deviation) against
    between problems (standard deviation of the problems' mean scores). A reward model that only
    learned how hard a problem looks has within << between: its ranking of one problem's
    solutions is then decided by differences near numerical noise."""
    def std(xs: list[float]) -> float:
        m = sum(xs) / len(xs)
        return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))

    scored = [scores for scores, _ in groups if scores]
    if not scored:
        return {"within": 0.0, "between": 0.0}
    return {"within": sum(std(s) for s in scored) / len(scored),
            "between": std([sum(s) / len(s) for s in scored])}


def vote_scorer_agreement(pools: list[SamplePool], scorer: str, n: int) -> dict[str, float]:
    """Over each pool's first n samples, the share of problems where majority vote and the
    scorer's best-of-n are both right (`both`), only the vote is (`vote_only`: the scorer picked a
    wrong sample over a right majority), only the scorer is (`scorer_only`: what it can add to
    the vote) or neither. A scorer with a high within-problem AUC gains nothing over the vote when
    its wins are all in `both`. Ties count as the chance of being right."""
    shares = {"both": 0.0, "vote_only": 0.0, "scorer_only": 0.0, "neither": 0.0}
    subset = tuple(range(n))
    for pool in pools:
        if len(pool.correct) < n:
            raise ValueError(f"a pool has {len(pool.correct)} samples, fewer than n={n}")
        vote, pick = pool_accuracy("majority", pool, subset), pool_accuracy(f"best_of_n[{scorer}]", pool, subset)
        shares["both"] += vote * pick
        shares["vote_only"] += vote * (1 - pick)
        shares["scorer_only"] += (1 - vote) * pick
        shares["neither"] += (1 - vote) * (1 - pick)
    return {k: v / len(pools) for k, v in shares.items()}


def compute_optimal(points: list[Point], budgets: list[float] | None = None,
                    exclude: tuple[str, ...] = ("pass@N",)) -> list[dict]:
    """For each difficulty level and token budget, the method (and N) with the best accuracy among
    points whose mean tokens fit the budget. pass@N is an oracle bound, so it is left out."""
    usable = [p for p in points if p.method not in exclude]
    if not usable:
        return []
    if budgets is None:  # powers of two spanning the measured token range
        low = int(math.log2(max(1.0, min(p.tokens for p in usable))))
        high = int(math.ceil(math.log2(max(1.0, max(p.tokens for p in usable)))))
        budgets = [float(2 ** i) for i in range(low, high + 1)]
    rows = []
    for level in sorted({p.difficulty for p in usable}, key=lambda d: (d is not None, d or 0)):
        at_level = [p for p in usable if p.difficulty == level]
        for budget in budgets:
            fits = [p for p in at_level if p.tokens <= budget]
            if not fits:
                continue
            best = max(fits, key=lambda p: (p.accuracy, -p.tokens))
            rows.append({"difficulty": level, "budget": budget, "method": best.method, "n": best.n,
                         "accuracy": best.accuracy, "tokens": best.tokens})
    return rows


CONFIDENCE = "confidence"
"""A scorer that needs no model: each whole sample's own mean token probability under the policy,
exp(mean log-prob) as the engine reported it while sampling (best-of-N, weighted vote, sample
pools). The baseline a trained reward model has to beat: it costs nothing and knows only how
sure the policy was."""


def confidence_of(mean_logprob: float | None, num_tokens: int) -> float:
    """exp(mean token log-prob) of one sample (0 for an empty one); an engine that reports no
    log-probs is an error."""
    if mean_logprob is None:
        if num_tokens > 0:
            raise ValueError(f"the {CONFIDENCE!r} scorer needs the engine's log-probs, and this engine reports none")
        return 0.0
    return math.exp(mean_logprob)


def confidence_scores(samples) -> list[float]:
    """`confidence_of` each `Completion`."""
    return [confidence_of(s.mean_logprob, s.num_tokens) for s in samples]


def build_pools(ctx, problems, n: int, scorers: list[str], aggregation: str = "last",
                chunk: int = 8) -> list[SamplePool]:
    """Sample n solutions of each `rlvr.search.Problem`, verify, group answers and score them.

    Generation is batched, `chunk` problems per engine call (cheap on a CPU, fast on a GPU); a
    scorer that can (`score_many`) scores the chunk's solutions in shared forwards. The scorer
    `confidence` is the samples' own mean token probability (`CONFIDENCE`).
    """
    from verifiers import extract_answer

    from rlvr.eval.metrics import default_equivalence

    pools = []
    for start in range(0, len(problems), chunk):
        part = problems[start:start + chunk]
        groups = ctx.sample([p.prompt for p in part], n, ctx.generation.max_new_tokens)
        texts = [[s.text for s in samples] for samples in groups]
        scores = {name: [confidence_scores(samples) for samples in groups] if name == CONFIDENCE else
                  ctx.score_many(name, list(zip(part, texts)), aggregation) for name in scorers}
        for j, (problem, samples) in enumerate(zip(part, groups)):
            ex = problem.example
            correct = [v >= 1.0 for v in ctx.score("verifier", problem, texts[j])]
            ids = group_answers([extract_answer(t) for t in texts[j]], default_equivalence(ex.kind))
            pools.append(SamplePool(ex.difficulty, ids, correct, [s.num_tokens for s in samples],
                                    {name: scores[name][j] for name in scorers}))
    return pools
