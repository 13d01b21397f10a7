"""The structured outcome of one verification."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class VerifyResult:
    """What a verifier decided about one completion, and why.

    >>> VerifyResult(score=1.0, correct=True, reason="correct", extracted="42").correct
    True
    """

    score: float
    """Reward in [0, 1]; partial credit (e.g. a fraction of tests passed) lies in between."""
    correct: bool
    """True only when the completion is fully right (score 1 for every built-in kind)."""
    reason: str
    """Why: a short category ("correct", "wrong answer", "timeout", ...) then ": detail" when useful."""
    extracted: str | None = None
    """The part of the completion that was judged (the final answer, expression or program)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"VerifyResult.score must lie in [0, 1], got {self.score}")

    @property
    def category(self) -> str:
        """The reason without its detail: what histograms of reasons count."""
        return self.reason.split(":", 1)[0]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VerifyResult":
        return cls(float(data["score"]), bool(data["correct"]), str(data["reason"]), data.get("extracted"))


def zero(reason: str, extracted: str | None = None) -> VerifyResult:
    """A score of 0 with the reason it was given."""
    return VerifyResult(0.0, False, reason, extracted)


def full(extracted: str | None = None, reason: str = "correct") -> VerifyResult:
    """A score of 1."""
    return VerifyResult(1.0, True, reason, extracted)
