"""What a problem is, and what a problem source must offer."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Example:
    """One problem with everything needed to verify an answer to it."""

    prompt: str
    """The problem statement, without any template applied."""
    reference: Any
    """What the verifier compares against: a string for math/numeric, a dict for countdown/code."""
    kind: str
    """Verifier kind (`verifiers.verify(kind, ...)`): math, numeric, countdown, code, ..."""
    difficulty: int = 1
    """Difficulty level, 1 = easiest."""
    solution: str | None = None
    """A worked solution (reasoning and final answer) when the source knows one; used by SFT."""
    id: str = ""
    """Stable identifier (source, split, index) for logging and deduplication."""
    meta: dict = field(default_factory=dict)
    """Anything else the source wants to keep (e.g. the original dataset row)."""


class TaskSource(Protocol):
    """An endless, reproducible stream of training problems plus a fixed held-out split.

    `state_dict`/`load_state_dict` hold the stream position so a resumed run draws exactly the
    problems an uninterrupted run would have drawn.
    """

    def sample(self, n: int) -> list[Example]: ...

    def held_out(self, n: int) -> list[Example]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    difficulty: int | list[int]
    """The level(s) drawn from now; a list draws each problem's level uniformly from it."""

    def set_difficulty(self, level: int | list[int]) -> None:
        """Change the level(s) of the problems drawn next (curricula); out of range raises."""
        ...
