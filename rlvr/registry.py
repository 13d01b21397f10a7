"""A name -> function registry: advantages, policy losses, KL estimators, tasks, prompt templates.

One name, one function, no synonyms: registering a name twice raises, and asking for an
unknown name lists the valid ones (verl `core_algos` style, without its signature drift).
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    def __init__(self, what: str, valid_label: str = "valid"):
        self.what = what
        """What the entries are, for error messages ("advantage estimator", ...)."""
        self.valid_label = valid_label
        """What precedes the list of names in the unknown-name error ("valid tasks", ...)."""
        self._entries: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: `@REGISTRY.register("grpo")`. A duplicate name raises ValueError."""

        def decorator(fn: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is already registered")
            self._entries[name] = fn
            return fn

        return decorator

    def get(self, name: str) -> F:
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.what} {name!r}; {self.valid_label}: {', '.join(sorted(self._entries))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
