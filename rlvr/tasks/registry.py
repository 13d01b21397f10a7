"""`make_task(name, ...)`: the one way recipes and the CLI build a task source by name."""
from __future__ import annotations

from typing import Callable

from rlvr.tasks.base import TaskSource

TaskFactory = Callable[..., TaskSource]
_TASKS: dict[str, TaskFactory] = {}


def register_task(name: str) -> Callable[[TaskFactory], TaskFactory]:
    """Decorator: register a factory `f(seed=..., difficulty=..., **options) -> TaskSource`."""

    def add(factory: TaskFactory) -> TaskFactory:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is already registered")
        _TASKS[name] = factory
        return factory

    return add


def available_tasks() -> list[str]:
    return sorted(_TASKS)


def make_task(name: str, seed: int = 0, difficulty: int | list[int] | None = None, **options) -> TaskSource:
    """Build a registered task source; an unknown name lists the valid ones.

    `difficulty` None means the source's default: level 1 for generators, every level for datasets.

    `options` go to the source (e.g. `ops=["+"]` for arithmetic, `tasks=[...]` for mixed,
    `source=..., preset="gsm8k"` for dataset); an option the source does not take is an error.
    """
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(available_tasks())}")
    try:
        if difficulty is not None:
            options["difficulty"] = difficulty
        return _TASKS[name](seed=seed, **options)
    except TypeError as e:  # an option the factory does not accept: say which task refused it
        raise ValueError(f"task {name!r}: {e}") from e
