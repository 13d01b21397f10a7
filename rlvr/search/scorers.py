"""Scorers: what ranks candidate solutions for best-of-N, weighted vote and tree search.

Every scorer has `score(problem, texts, aggregation) -> list[float]` (higher is better, 0..1) and
`num_tokens(problem, texts)` (tokens a model reads to score them; 0 for a verifier).
`texts` are (partial) solutions: whatever the policy wrote after the prompt.
"""
from __future__ import annotations

from typing import Protocol

from rlvr.reward_models.model import RewardModel, aggregate


class Scorer(Protocol):
    name: str

    def score(self, problem, texts: list[str], aggregation: str = "last") -> list[float]: ...

    def num_tokens(self, problem, texts: list[str]) -> int: ...


class VerifierScorer:
    """The task's verifier against the reference: an oracle for math tasks (it knows the answer),
    a legitimate test-time check where the reference is the problem itself (countdown, code tests).
    """

    name = "verifier"

    def score(self, problem, texts: list[str], aggregation: str = "last") -> list[float]:
        from verifiers import verify_batch

        aggregate([], aggregation)  # an outcome score has one value; still reject unknown names
        ex = problem.example
        return [float(r.score) for r in verify_batch(ex.kind, texts, [ex.reference] * len(texts))]

    def num_tokens(self, problem, texts: list[str]) -> int:
        return 0


class RewardModelScorer:
    """An ORM or PRM; the PRM's per-step scores are combined with the requested aggregation."""

    def __init__(self, model: RewardModel):
        self.model = model
        self.name = model.config.kind

    def score(self, problem, texts: list[str], aggregation: str = "last") -> list[float]:
        return self.model.score_texts(problem.prompt, texts, aggregation)

    def score_many(self, items: list[tuple], aggregation: str = "last") -> list[list[float]]:
        """Scores for (problem, texts) items of several problems, in shared forwards."""
        return self.model.score_texts_many([(problem.prompt, texts) for problem, texts in items], aggregation)

    def num_tokens(self, problem, texts: list[str]) -> int:
        return self.model.num_tokens(problem.prompt, texts)
