"""`verify` and `verify_batch`: run any registered kind where its isolation says, never hang."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from verifiers.pool import default_workers, shared_pool
from verifiers.registry import VerifierSpec, get_verifier
from verifiers.result import VerifyResult, zero

DEFAULT_TIMEOUT_S = 10.0


def verify(kind: str, completion: str, reference: Any, *, timeout_s: float = DEFAULT_TIMEOUT_S, **options) -> VerifyResult:
    """Score one completion against its reference; ends within about `timeout_s` whatever the input.

    >>> verify("math", "so it is \\\\boxed{12}", "12").score
    1.0
    >>> verify("countdown", "<answer>(3 + 5) * 2</answer>", {"numbers": [2, 3, 5], "target": 16}).reason
    'correct'
    """
    return verify_batch(kind, [completion], [reference], timeout_s=timeout_s, workers=1, **options)[0]


def verify_batch(
    kind: str,
    completions: Sequence[str],
    references: Sequence[Any],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    workers: int | None = None,
    **options,
) -> list[VerifyResult]:
    """Score many completions, in input order. Safe to call from any thread.

    Each item is bounded by `timeout_s`; an item that hangs, crashes or exhausts memory gets score
    0 with the reason and the batch goes on. `workers` worker processes (default: up to 4, one
    per core) run the items that need isolation.
    """
    spec = get_verifier(kind)
    spec.validate_options(options)
    _check_inputs(spec, completions, references, timeout_s)
    workers = workers or default_workers()
    if spec.isolation == "inline":
        return [_run_inline(spec.check, c, r, options) for c, r in zip(completions, references)]
    if spec.isolation == "sandbox":
        return _run_sandboxed(spec, completions, references, timeout_s, workers, options)
    return _run_in_workers(spec, completions, references, timeout_s, workers, options)


def _check_inputs(spec: VerifierSpec, completions: Sequence, references: Sequence, timeout_s: float) -> None:
    if len(completions) != len(references):
        raise ValueError(f"{len(completions)} completions but {len(references)} references")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    for index, completion in enumerate(completions):
        if not isinstance(completion, str):
            raise TypeError(f"completions[{index}] must be a string, got {type(completion).__name__}")
    if spec.check_reference is not None:
        for index, reference in enumerate(references):
            try:
                spec.check_reference(reference)
            except ValueError as error:
                raise ValueError(f"references[{index}]: {error}") from None


def _run_inline(check, completion: str, reference: Any, options: dict) -> VerifyResult:
    try:
        return check(completion, reference, **options)
    except RecursionError:
        return zero("error: input too deeply nested")
    except Exception as error:  # the completion broke the checker: a zero with the reason
        return zero(f"error: {type(error).__name__}: {str(error)[:200]}")


def _run_sandboxed(spec, completions, references, timeout_s, workers, options) -> list[VerifyResult]:
    # Each check is a sandboxed subprocess that enforces its own limits; threads only wait on it.
    def one(pair):
        return _run_inline(spec.check, pair[0], pair[1], {**options, "timeout_s": timeout_s})

    if len(completions) == 1:
        return [one((completions[0], references[0]))]
    with ThreadPoolExecutor(max_workers=workers) as threads:
        return list(threads.map(one, zip(completions, references)))


def _run_in_workers(spec, completions, references, timeout_s, workers, options) -> list[VerifyResult]:
    results: list[VerifyResult | None] = [None] * len(completions)
    slow: list[int] = []
    for index, (completion, reference) in enumerate(zip(completions, references)):
        fast = _run_inline(spec.fast_path, completion, reference, options) if spec.fast_path else None
        if fast is None:
            slow.append(index)
        else:
            results[index] = fast
    if not slow:
        return results  # type: ignore[return-value]
    _check_serializable(spec.name, options, [references[i] for i in slow])
    # One task per distinct verdict key (e.g. per distinct final answer and reference).
    groups: dict = {}
    for index in slow:
        key = spec.same_verdict_key(completions[index], references[index], **options) if spec.same_verdict_key else index
        groups.setdefault(key, []).append(index)
    leaders = [members[0] for members in groups.values()]
    tasks = [
        {
            "kind": spec.name,
            "module": spec.check.__module__,
            "completion": completions[i],
            "reference": references[i],
            "options": options,
        }
        for i in leaders
    ]
    for members, result in zip(groups.values(), shared_pool().map(tasks, timeout_s, workers)):
        for index in members:
            results[index] = VerifyResult.from_dict(result)
    return results  # type: ignore[return-value]


def _check_serializable(kind: str, options: dict, references: list) -> None:
    # Tasks travel to the workers as JSON (never pickle: see verifiers.framing).
    try:
        json.dumps([options, references])
    except (TypeError, ValueError) as error:
        raise TypeError(f"options and references of kind {kind!r} must be JSON-serializable: {error}") from None


def answers_equivalent(a: str, b: str, kind: str = "math", *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether two final answers are the same (for grouping answers in a vote).

    Kinds that extract answers (math, numeric) compare them as that kind does; for any other kind
    two answers are the same when their text is, whitespace aside.

    >>> answers_equivalent("\\\\frac{1}{2}", "0.5")
    True
    >>> answers_equivalent("1e-7", "2e-7")
    False
    >>> answers_equivalent(" (3 + 5) * 2", "(3 + 5) * 2", kind="countdown")
    True
    """
    spec = get_verifier(kind)
    if "extract" not in spec.option_names():
        return a.strip() == b.strip()
    return verify(kind, a, b, timeout_s=timeout_s, extract=("whole",)).correct
