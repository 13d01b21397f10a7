"""What every search method shares: the problem, the context, the result, the registry.

Every method has one signature, `method(problem, ctx, cfg) -> SearchResult`, where `cfg` is the
method's own typed config dataclass. The caller never branches on a method's name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from rlvr.errors import UserError
from rlvr.registry import Registry
from rlvr.tasks.base import Example


class SearchError(UserError, ValueError):
    """A search cannot run as asked (bad budget, unknown scorer, ...); the message says why."""


@dataclass
class Problem:
    """One problem as search sees it."""

    prompt: str
    """The text the policy continues (the task prompt with its template applied)."""
    example: Example
    """The task example (reference and verifier kind), for verifier scorers and evaluation."""


@dataclass
class SearchResult:
    """What a method answers, and what it cost."""

    answer: str | None
    """The final answer extracted from `text` (None when no answer could be extracted)."""
    text: str
    """The chosen completion (everything the policy wrote after the prompt)."""
    tokens_spent: int
    """Policy tokens generated for this problem, every discarded sample and rollout included."""
    details: dict = field(default_factory=dict)
    """Method-specific facts: `scored_tokens` (tokens a reward model read), the adaptive level, ..."""


@dataclass
class MethodSpec:
    fn: Callable[..., SearchResult]
    config_cls: type
    description: str


_METHODS: Registry[MethodSpec] = Registry("search method")


def register_search(name: str, config_cls: type, description: str):
    """Decorator: register `fn(problem, ctx, cfg) -> SearchResult` under `name`."""

    def wrap(fn):
        _METHODS.add(name, MethodSpec(fn, config_cls, description))
        return fn

    return wrap


def available_methods() -> list[str]:
    _load_builtin_methods()
    return _METHODS.names()


def get_method(name: str) -> MethodSpec:
    """The method registered as `name`; an unknown name raises UnknownNameError listing the valid ones."""
    _load_builtin_methods()
    return _METHODS.get(name)


def make_config(name: str, options: dict[str, Any] | None = None):
    """The typed config of method `name` from plain data (unknown keys are errors)."""
    from rlvr.config import from_dict

    return from_dict(get_method(name).config_cls, options or {}, path=name)


def run_search(name: str, problem: Problem, ctx, cfg=None) -> SearchResult:
    """Run method `name` on one problem; `cfg` defaults to the method's default config."""
    spec = get_method(name)
    cfg = spec.config_cls() if cfg is None else cfg
    if not isinstance(cfg, spec.config_cls):
        raise SearchError(f"{name} takes a {spec.config_cls.__name__}, got {type(cfg).__name__}")
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    generated, scored = ctx.generated_tokens, ctx.scored_tokens
    result = spec.fn(problem, ctx, cfg)
    # The ledger: what the method says it spent must be what went through the engine.
    if result.tokens_spent != ctx.generated_tokens - generated:
        raise AssertionError(
            f"{name} reported {result.tokens_spent} tokens but generated {ctx.generated_tokens - generated}"
        )
    result.details.setdefault("scored_tokens", ctx.scored_tokens - scored)
    return result


def replace(cfg, **changes):
    """A copy of a config with some fields changed (configs are treated as frozen)."""
    return dataclasses.replace(cfg, **changes)


def require_positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        if value is None or value < 1:
            raise SearchError(f"{owner}.{name} must be >= 1, got {value}")


def _load_builtin_methods() -> None:
    # Importing the modules runs their @register_search decorators.
    from rlvr.search import adaptive, beam, best_of_n, dvts, mcts, thinking, vote  # noqa: F401
