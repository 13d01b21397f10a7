"""A mixture of task sources: each draw picks a source with seeded, optionally weighted odds."""
from __future__ import annotations

import random

from rlvr.tasks.base import Example, TaskSource
from rlvr.tasks.registry import make_task, register_task

DEFAULT_TASKS = ["arithmetic", "linear_equation", "countdown", "python_functions"]


@register_task("mixed")
class MixedSource:
    """`make_task("mixed", seed, difficulty, tasks=[...] or {name: options}, weights=[...])`.

    Each sub-source gets the mixture's seed and difficulty; `set_difficulty` reaches all of them.
    The pick for draw i depends only on (seed, i), so the stream resumes exactly from the state.
    """

    name = "mixed"

    def __init__(self, seed: int = 0, difficulty: int | list[int] | None = None,
                 tasks: list[str] | dict[str, dict] | None = None, weights: list[float] | None = None):
        specs = {name: {} for name in (tasks or DEFAULT_TASKS)} if not isinstance(tasks, dict) else tasks
        if not specs:
            raise ValueError("mixed: tasks is empty")
        if "mixed" in specs:
            raise ValueError("mixed: a mixture cannot contain itself")
        self.names = list(specs)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.names)
        if len(self.weights) != len(self.names) or any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ValueError(f"mixed: weights must be {len(self.names)} non-negative numbers with a positive sum, "
                             f"got {weights!r}")
        self.seed = seed
        self.sources: list[TaskSource] = [
            make_task(name, seed=seed, difficulty=difficulty, **(options or {})) for name, options in specs.items()
        ]
        self._position = 0

    @property
    def difficulty(self) -> int | list[int]:
        return self.sources[0].difficulty

    def set_difficulty(self, level: int | list[int]) -> None:
        for source in self.sources:
            source.set_difficulty(level)

    def _pick(self, stream: str, index: int) -> int:
        rng = random.Random(f"mixed:{self.seed}:{stream}:{index}")
        return rng.choices(range(len(self.sources)), weights=self.weights)[0]

    def sample(self, n: int) -> list[Example]:
        out = []
        for _ in range(n):
            out.extend(self.sources[self._pick("train", self._position)].sample(1))
            self._position += 1
        return out

    def held_out(self, n: int) -> list[Example]:
        picks = [self._pick("held_out", j) for j in range(n)]
        pools = [iter(source.held_out(picks.count(i))) for i, source in enumerate(self.sources)]
        return [next(pools[i]) for i in picks]

    def state_dict(self) -> dict:
        return {"name": self.name, "seed": self.seed, "position": self._position,
                "sources": {name: source.state_dict() for name, source in zip(self.names, self.sources)}}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name or state.get("seed") != self.seed:
            raise ValueError(f"mixed: state is from {state.get('name')!r} seed {state.get('seed')!r}, "
                             f"this source is mixed seed {self.seed}")
        if sorted(state["sources"]) != sorted(self.names):
            raise ValueError(f"mixed: state holds tasks {sorted(state['sources'])}, this mixture has {sorted(self.names)}")
        for name, source in zip(self.names, self.sources):
            source.load_state_dict(state["sources"][name])
        self._position = int(state["position"])
