"""Best-of-N: sample N whole solutions, keep the one the scorer ranks highest."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from rlvr.search.base import Problem, SearchResult, register_search, require_positive
from rlvr.search.context import SearchContext, extract


@dataclass
class BestOfNConfig:
    """Best-of-N sampling."""

    renamed: ClassVar[dict[str, str]] = {"n": "renamed to num_generations (samples per problem, the name recipes use)"}
    """Old keys and what replaced them (`rlvr.config.from_dict` says so)."""

    num_generations: int = 8
    """N: independent samples per problem."""
    scorer: str = "orm"
    """What ranks them: verifier, orm, prm or judge (must be loaded in the context), or confidence
    (the policy's own mean token probability of each sample: no model)."""
    aggregation: Literal["last", "min", "prod", "mean"] = "last"
    """How a PRM's step scores become one solution score."""

    def validate(self):
        require_positive("best_of_n", num_generations=self.num_generations)


@register_search("best_of_n", BestOfNConfig, "N samples, the highest-scored wins")
def best_of_n(problem: Problem, ctx: SearchContext, cfg: BestOfNConfig) -> SearchResult:
    samples = ctx.sample_solutions(problem.prompt, cfg.num_generations)
    texts = [s.text for s in samples]
    scores = ctx.score_samples(cfg.scorer, problem, samples, cfg.aggregation)
    best = max(range(len(texts)), key=lambda i: scores[i])  # ties: the first sample
    return SearchResult(
        answer=extract(texts[best]),
        text=texts[best],
        tokens_spent=sum(s.num_tokens for s in samples),
        details={"scores": scores, "sample_tokens": [s.num_tokens for s in samples], "chosen": best,
                 "mean_logprobs": [s.mean_logprob for s in samples]},
    )
