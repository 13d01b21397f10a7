"""The machinery every seeded problem generator shares: stream position, levels, held-out split.

A generator only says how to make one problem at one level from a `random.Random`
(`GeneratorSource.make`). This base turns that into a `TaskSource`:

- Draw i of the training stream uses its own RNG seeded from (name, seed, i), so the stream is
  infinite, identical for the same seed, and restored exactly from `{"position": i}`.
- The held-out split is a partition of the *problem space*: a problem is held out when a hash of
  its prompt falls below `held_out_fraction`. The training stream skips those prompts, so no
  held-out problem is ever trained on, whatever the seed, level or number of draws.
- `held_out(n)` draws from a separate RNG stream, keeps only held-out prompts, removes duplicates
  and returns the first n: the same list every time for the same (seed, levels).
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import random
from typing import ClassVar

from rlvr.tasks.base import Example


def normalize_levels(level: int | list[int] | tuple[int, ...], max_level: int, name: str) -> list[int]:
    """Validate a level or list of levels against 1..max_level; a clear error names the source."""
    levels = [level] if isinstance(level, int) and not isinstance(level, bool) else list(level)
    if not levels:
        raise ValueError(f"{name}: difficulty list is empty; valid levels are 1..{max_level}")
    for lv in levels:
        if isinstance(lv, bool) or not isinstance(lv, int) or not 1 <= lv <= max_level:
            raise ValueError(f"{name}: difficulty {lv!r} is out of range; valid levels are 1..{max_level}")
    return levels


def prompt_bucket(prompt: str) -> float:
    """A stable number in [0, 1) from the prompt text (not Python's salted `hash`)."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class GeneratorSource(abc.ABC):
    """Base of the seeded generators; subclasses set `name`, `kind`, `max_difficulty`, `make`."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    max_difficulty: ClassVar[int] = 5

    def __init__(self, seed: int = 0, difficulty: int | list[int] = 1, held_out_fraction: float = 0.1):
        if not 0.0 < held_out_fraction < 1.0:
            raise ValueError(f"{self.name}: held_out_fraction must be in (0, 1), got {held_out_fraction}")
        self.seed = seed
        self.held_out_fraction = held_out_fraction
        self._levels = normalize_levels(difficulty, self.max_difficulty, self.name)
        self._position = 0
        self._held_out_cache: dict[tuple, list[Example]] = {}

    # -- what a subclass provides ------------------------------------------------------------
    @abc.abstractmethod
    def make(self, rng: random.Random, level: int) -> Example:
        """One problem at `level`, drawn only from `rng`; `id` is filled in by the base."""

    # -- TaskSource ------------------------------------------------------------------------
    @property
    def difficulty(self) -> int | list[int]:
        return self._levels[0] if len(self._levels) == 1 else list(self._levels)

    def set_difficulty(self, level: int | list[int]) -> None:
        self._levels = normalize_levels(level, self.max_difficulty, self.name)

    def is_held_out(self, prompt: str) -> bool:
        return prompt_bucket(prompt) < self.held_out_fraction

    def sample(self, n: int) -> list[Example]:
        out: list[Example] = []
        while len(out) < n:
            index = self._position
            self._position += 1
            example = self._draw("train", index)
            if not self.is_held_out(example.prompt):
                out.append(example)
        return out

    def held_out(self, n: int) -> list[Example]:
        if n <= 0:
            return []
        key = (n, tuple(self._levels))
        if key not in self._held_out_cache:
            self._held_out_cache[key] = self._collect_held_out(n)
        return list(self._held_out_cache[key])

    def state_dict(self) -> dict:
        return {"name": self.name, "seed": self.seed, "position": self._position, "difficulty": list(self._levels)}

    def load_state_dict(self, state: dict) -> None:
        for key in ("name", "seed"):
            if state.get(key) != getattr(self, key):
                raise ValueError(
                    f"{self.name}: state was saved from {key}={state.get(key)!r}, this source has {getattr(self, key)!r}"
                )
        self._levels = normalize_levels(state["difficulty"], self.max_difficulty, self.name)
        self._position = int(state["position"])

    # -- helpers ---------------------------------------------------------------------------
    def _draw(self, stream: str, index: int) -> Example:
        # Seeding Random with a str hashes it with SHA-512: stable across processes and versions.
        rng = random.Random(f"{self.name}:{self.seed}:{stream}:{index}")
        level = self._levels[0] if len(self._levels) == 1 else rng.choice(self._levels)
        example = self.make(rng, level)
        return dataclasses.replace(example, id=f"{self.name}/{stream}/{index}")

    def _collect_held_out(self, n: int) -> list[Example]:
        found: dict[str, Example] = {}
        max_draws = 1000 + 200 * n  # small levels have few problems; stop instead of looping forever
        for index in range(max_draws):
            example = self._draw("held_out", index)
            if self.is_held_out(example.prompt) and example.prompt not in found:
                found[example.prompt] = example
                if len(found) == n:
                    return list(found.values())
        raise ValueError(
            f"{self.name}: only {len(found)} distinct held-out problems found at difficulty "
            f"{self.difficulty} (asked for {n}); ask for fewer, raise the difficulty or held_out_fraction"
        )


def r1_solution(thinking: str, answer: str) -> str:
    """The worked-solution format every generator writes (DeepSeek-R1 style)."""
    return f"<think>{thinking}</think><answer>{answer}</answer>"
