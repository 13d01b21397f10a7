"""`make_task(name, ...)`: the one way recipes and the CLI build a task source by name."""
from __future__ import annotations

from typing import Callable

from rlvr.registry import Registry
from rlvr.tasks.base import TaskSource

TaskFactory = Callable[..., TaskSource]
_TASKS: Registry[TaskFactory] = Registry("task", valid_label="valid tasks")


def register_task(name: str) -> Callable[[TaskFactory], TaskFactory]:
    """Decorator: register a factory `f(seed=..., difficulty=..., **options) -> TaskSource`."""
    return _TASKS.register(name)


def available_tasks() -> list[str]:
    return _TASKS.names()


def make_task(name: str, seed: int = 0, difficulty: int | list[int] | None = None, **options) -> TaskSource:
    """Build a registered task source; an unknown name lists the valid ones.

    `difficulty` None means the source's default: level 1 for generators, every level for datasets.

    `options` go to the source (e.g. `ops=["+"]` for arithmetic, `tasks=[...]` for mixed,
    `source=..., preset="gsm8k"` for dataset); an option the source does not take is an error.
    """
    factory = _TASKS.get(name)
    try:
        if difficulty is not None:
            options["difficulty"] = difficulty
        return factory(seed=seed, **options)
    except TypeError as e:  # an option the factory does not accept: say which task refused it
        raise ValueError(f"task {name!r}: {e}") from e
