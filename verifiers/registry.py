"""The registry of verifier kinds: one name, one function, one way it is run.

A verifier is `check(completion, reference, **options) -> VerifyResult`. `isolation` says where
`verify` runs it:

- ``"inline"``: in the calling process. Only for checks that are cheap and bounded by construction
  (no sympy, no regex with backtracking, no user code).
- ``"worker"``: in a pooled worker process that is killed at the deadline (math through sympy can
  run for hours on some inputs). The function must live in an importable module: the worker
  imports it by name.
- ``"sandbox"``: the check limits itself (it runs untrusted code in a sandboxed subprocess) and
  takes the deadline as a ``timeout_s`` keyword.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from verifiers.result import VerifyResult

Check = Callable[..., VerifyResult]
ISOLATIONS = ("inline", "worker", "sandbox")


@dataclass(frozen=True)
class VerifierSpec:
    """A registered kind."""

    name: str
    check: Check
    """`check(completion, reference, **options) -> VerifyResult`."""
    isolation: str
    """Where it runs: "inline", "worker" or "sandbox" (see the module docstring)."""
    fast_path: Callable[..., VerifyResult | None] | None = None
    """Optional cheap in-process answer (same arguments); None means "ask `check`"."""
    check_reference: Callable[[Any], None] | None = None
    """Optional validation of a reference; raises ValueError naming the bad field."""
    same_verdict_key: Callable[..., Any] | None = None
    """Optional: items with equal keys (same arguments as `check`) get the same verdict, so a
    batch sends only one of them to a worker (a GRPO group repeats its final answers)."""

    def option_names(self) -> list[str]:
        params = inspect.signature(self.check).parameters.values()
        return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]

    def validate_options(self, options: dict) -> None:
        """Unknown options are an error, never silently ignored."""
        valid = self.option_names()
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise TypeError(
                f"verifier {self.name!r} got unknown option(s) {unknown}; valid options: {valid}"
            )


_REGISTRY: dict[str, VerifierSpec] = {}


def register_verifier(
    name: str,
    *,
    isolation: str = "inline",
    fast_path: Callable[..., VerifyResult | None] | None = None,
    check_reference: Callable[[Any], None] | None = None,
    same_verdict_key: Callable[..., Any] | None = None,
) -> Callable[[Check], Check]:
    """Decorator that registers `check` under `name`; a duplicate name raises.

    >>> @register_verifier("doc_exact")
    ... def exact(completion, reference):
    ...     from verifiers.result import full, zero
    ...     return full(completion) if completion.strip() == reference else zero("wrong answer", completion)
    >>> "doc_exact" in available_kinds()
    True
    >>> _ = _REGISTRY.pop("doc_exact")
    """
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")

    def decorate(check: Check) -> Check:
        if name in _REGISTRY:
            raise ValueError(f"verifier kind {name!r} is already registered")
        _REGISTRY[name] = VerifierSpec(name, check, isolation, fast_path, check_reference, same_verdict_key)
        return check

    return decorate


def get_verifier(kind: str) -> VerifierSpec:
    """The spec registered under `kind`; an unknown kind lists the valid ones."""
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown verifier kind {kind!r}; available kinds: {available_kinds()}") from None


def available_kinds() -> list[str]:
    """Names of every registered kind, sorted."""
    return sorted(_REGISTRY)
