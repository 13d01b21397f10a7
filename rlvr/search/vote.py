"""Self-consistency (Wang et al. 2203.11171): sample N solutions, vote on their final answers.

Answers are grouped by verifier equivalence (`rlvr.eval.majority_vote`). The weighted vote adds up
a scorer's scores per answer instead of counting (search-and-learn's "weighted" metric).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from rlvr.eval.metrics import default_equivalence, majority_vote
from rlvr.search.base import Problem, SearchResult, register_search, require_positive
from rlvr.search.context import SearchContext, extract


@dataclass
class MajorityVoteConfig:
    """Majority vote over N samples."""

    renamed: ClassVar[dict[str, str]] = {"n": "renamed to num_generations (samples per problem, the name recipes use)"}
    """Old keys and what replaced them (`rlvr.config.from_dict` says so)."""

    num_generations: int = 8
    """N: independent samples per problem."""

    def validate(self):
        require_positive("majority_vote", num_generations=self.num_generations)


@dataclass
class WeightedVoteConfig:
    """Vote over N samples, each answer weighted by a scorer."""

    renamed: ClassVar[dict[str, str]] = {"n": "renamed to num_generations (samples per problem, the name recipes use)"}
    """Old keys and what replaced them (`rlvr.config.from_dict` says so)."""

    num_generations: int = 8
    """N: independent samples per problem."""
    scorer: str = "prm"
    """What weighs each sample: verifier, orm, prm, judge, or confidence (the policy's own mean token
    probability of the sample: no model)."""
    aggregation: Literal["last", "min", "prod", "mean"] = "last"
    """How a PRM's step scores become one solution score."""

    def validate(self):
        require_positive("weighted_vote", num_generations=self.num_generations)


def _vote(problem: Problem, ctx: SearchContext, n: int, scorer: str | None, aggregation: str) -> SearchResult:
    samples = ctx.sample_solutions(problem.prompt, n)
    texts = [s.text for s in samples]
    answers = [extract(t) for t in texts]
    weights = ctx.score_samples(scorer, problem, samples, aggregation) if scorer else None
    vote = majority_vote(answers, weights, default_equivalence(problem.example.kind))
    chosen = vote.index if vote.index is not None else 0
    return SearchResult(
        answer=vote.answer,
        text=texts[chosen],
        tokens_spent=sum(s.num_tokens for s in samples),
        details={"share": vote.share, "answers": answers, "weights": weights,
                 "sample_tokens": [s.num_tokens for s in samples]},
    )


@register_search("majority_vote", MajorityVoteConfig, "N samples, the most frequent answer wins")
def majority(problem: Problem, ctx: SearchContext, cfg: MajorityVoteConfig) -> SearchResult:
    return _vote(problem, ctx, cfg.num_generations, None, "last")


@register_search("weighted_vote", WeightedVoteConfig, "N samples, answers weighted by a scorer")
def weighted(problem: Problem, ctx: SearchContext, cfg: WeightedVoteConfig) -> SearchResult:
    return _vote(problem, ctx, cfg.num_generations, cfg.scorer, cfg.aggregation)
