"""Adaptive compute: try cheap first, escalate only when the cheap answer is not trusted.

Level 1 `single`: one sample. Level 2 `beam_search`. Level 3 `best_of_n`. After levels 1 and 2 the
answer is checked, by the verifier (`check: verifier`; an oracle on math tasks, a real test-time
check where the reference is the problem itself, e.g. countdown or code tests) or by a scorer's
confidence (`check: confidence`: accept when the score reaches `threshold`). With
`confidence_scorer: confidence` the score is the policy's own mean token probability of the answer's
sample (no model); a beam-search answer is pieced from steps and has no such number, so that check
escalates from the single sample straight to best-of-N. The whole search
never generates more than `token_budget` tokens: the single sample is capped at the budget, and a
later level starts only when its worst case fits what remains (beam search: every round expanding
every beam by full steps; best-of-N: every sample at `max_new_tokens`, so N is cut to fit).
`details['level']` names the level whose answer was returned, `details['accepted']` whether it
passed the check.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rlvr.search.base import Problem, SearchError, SearchResult, register_search, replace
from rlvr.search.beam import BeamSearchConfig, beam_search
from rlvr.search.best_of_n import BestOfNConfig, best_of_n
from rlvr.search.context import SearchContext, extract

LEVELS = ("single", "beam_search", "best_of_n")


@dataclass
class AdaptiveConfig:
    """Escalating test-time compute."""

    check: Literal["verifier", "confidence"] = "confidence"
    """How an answer is trusted: the task verifier, or a scorer's score >= threshold."""
    confidence_scorer: str = "prm"
    """Scorer for `check: confidence`: a loaded scorer (prm, orm, judge), or confidence (the policy's
    own mean token probability of the sample: no model; the beam-search level is then skipped)."""
    threshold: float = 0.5
    """Minimum confidence score to accept an answer."""
    aggregation: Literal["last", "min", "prod", "mean"] = "last"
    """How the confidence scorer's step scores become one score."""
    token_budget: int = 4096
    """Most policy tokens the whole escalation may generate."""
    beam: BeamSearchConfig = field(default_factory=BeamSearchConfig)
    """Level 2."""
    best_of_n: BestOfNConfig = field(default_factory=BestOfNConfig)
    """Level 3 (its n is cut to what the remaining budget pays for)."""

    def validate(self):
        if self.token_budget < 1:
            raise SearchError(f"adaptive.token_budget must be >= 1, got {self.token_budget}")
        if not 0.0 <= self.threshold <= 1.0:
            raise SearchError(f"adaptive.threshold must be in [0, 1], got {self.threshold}")
        self.beam.validate()
        self.best_of_n.validate()


def calibrate_threshold(scores: list[float], correct: list[bool]) -> float:
    """The confidence threshold that best separates correct from incorrect solutions on labelled
    (training) data: the cut maximising the accuracy of "accept iff score >= threshold".

    >>> calibrate_threshold([0.1, 0.2, 0.6, 0.7], [False, False, True, True])
    0.6
    """
    if not scores or len(scores) != len(correct):
        raise SearchError("calibrate_threshold needs one correctness flag per score, and at least one")
    candidates = sorted(set(scores)) + [float("inf")]
    return max(candidates, key=lambda t: (sum((s >= t) == c for s, c in zip(scores, correct)), -t))


def trusted(ctx: SearchContext, problem: Problem, text: str, cfg: AdaptiveConfig,
            mean_logprob: float | None = None, num_tokens: int = 0) -> tuple[bool, float]:
    """Whether the answer in `text` passes the check, and its score; `mean_logprob` and
    `num_tokens` describe the sample that wrote it (the policy-confidence check reads only those)."""
    if cfg.check == "verifier":
        score = ctx.score("verifier", problem, [text])[0]
        return score >= 1.0, score
    if _checks_policy_confidence(cfg):
        from rlvr.eval.curves import confidence_of

        score = confidence_of(mean_logprob, num_tokens)
        return score >= cfg.threshold, score
    score = ctx.score(cfg.confidence_scorer, problem, [text], cfg.aggregation)[0]
    return score >= cfg.threshold, score


def _checks_policy_confidence(cfg: AdaptiveConfig) -> bool:
    from rlvr.eval.curves import CONFIDENCE

    return cfg.check == "confidence" and cfg.confidence_scorer == CONFIDENCE


def worst_case_beam_tokens(ctx: SearchContext, cfg: BeamSearchConfig) -> int:
    """The most tokens `beam_search` can generate: every round expands beam_width x expansions paths
    by a full step."""
    return cfg.max_steps * cfg.beam_width * cfg.expansions * ctx.generation.max_step_tokens


@register_search("adaptive", AdaptiveConfig, "one sample, then beam search, then best-of-N, within a token budget")
def adaptive(problem: Problem, ctx: SearchContext, cfg: AdaptiveConfig) -> SearchResult:
    per_level: dict[str, int] = {}
    single = ctx.sample_solutions(problem.prompt, 1, min(ctx.generation.max_new_tokens, cfg.token_budget))[0]
    per_level["single"] = single.num_tokens
    result = SearchResult(extract(single.text), single.text, single.num_tokens)
    ok, conf = trusted(ctx, problem, single.text, cfg, single.mean_logprob, single.num_tokens)
    level = "single"
    spent = single.num_tokens
    beam_fits = worst_case_beam_tokens(ctx, cfg.beam) <= cfg.token_budget - spent
    if not ok and beam_fits and not _checks_policy_confidence(cfg):
        beam = beam_search(problem, ctx, cfg.beam)
        per_level["beam_search"] = beam.tokens_spent
        spent += beam.tokens_spent
        result, level = beam, "beam_search"
        ok, conf = trusted(ctx, problem, beam.text, cfg)
    if not ok:
        affordable = (cfg.token_budget - spent) // ctx.generation.max_new_tokens
        if affordable >= 1:
            bon = best_of_n(problem, ctx, replace(cfg.best_of_n, num_generations=min(cfg.best_of_n.num_generations, affordable)))
            per_level["best_of_n"] = bon.tokens_spent
            spent += bon.tokens_spent
            result, level = bon, "best_of_n"
            chosen = bon.details["chosen"]
            ok, conf = trusted(ctx, problem, bon.text, cfg, bon.details["mean_logprobs"][chosen],
                               bon.details["sample_tokens"][chosen])
    return SearchResult(
        answer=result.answer, text=result.text, tokens_spent=spent,
        details={"level": level, "accepted": ok, "confidence": conf, "tokens_per_level": per_level},
    )
