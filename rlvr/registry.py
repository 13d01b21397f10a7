"""A name -> entry registry: advantages, policy losses, KL estimators, tasks, prompt templates,
rollout engines, stage types, search methods (the torch-free verifiers package keeps its own).

One name, one entry, no synonyms: registering a name twice raises, and asking for an unknown name
raises `UnknownNameError` listing the valid ones (verl `core_algos` style, without its signature
drift).
"""
from __future__ import annotations

from typing import Callable, Generic, Iterable, TypeVar

from rlvr.errors import UserError

F = TypeVar("F")


class UnknownNameError(UserError, ValueError):
    """A name no registry has an entry for; the message lists the valid names."""


class Registry(Generic[F]):
    def __init__(self, what: str, valid_label: str = "valid"):
        self.what = what
        """What the entries are, for error messages ("advantage estimator", ...)."""
        self.valid_label = valid_label
        """What precedes the list of names in the unknown-name error ("valid tasks", ...)."""
        self._entries: dict[str, F] = {}

    def add(self, name: str, entry: F) -> F:
        """Register `entry` under `name`; a duplicate name raises ValueError."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: `@REGISTRY.register("grpo")`. A duplicate name raises ValueError."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> F:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.unknown(name) from None

    def unknown(self, name: object, also: Iterable[str] = ()) -> UnknownNameError:
        """The error for `name`, listing the registered names (and `also`, names handled outside
        the registry such as `auto`)."""
        valid = [*also, *sorted(self._entries)]
        return UnknownNameError(f"unknown {self.what} {name!r}; {self.valid_label}: {', '.join(valid)}")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(sorted(self._entries))
