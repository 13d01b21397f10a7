"""The `numeric` kind: the final answer is a number within a tolerance of the reference."""
from __future__ import annotations

from typing import Any, Sequence

from verifiers.extract import DEFAULT_STRATEGIES, extract_answer
from verifiers.plain_numbers import numbers_close, parse_number
from verifiers.registry import register_verifier
from verifiers.result import VerifyResult, full, zero


def check_numeric_reference(reference: Any) -> None:
    if isinstance(reference, bool) or not isinstance(reference, (str, int, float)):
        raise ValueError(f"numeric reference must be a number or a numeric string, got {type(reference).__name__}")
    if parse_number(str(reference)) is None:
        raise ValueError(f"numeric reference {reference!r} is not a plain number")


@register_verifier("numeric", check_reference=check_numeric_reference)
def verify_numeric(
    completion: str,
    reference: str | float,
    *,
    rel_tol: float = 1e-6,
    abs_tol: float = 0.0,
    extract: Sequence[str] = DEFAULT_STRATEGIES,
) -> VerifyResult:
    """Score 1 when |answer - reference| <= max(rel_tol * max(|answer|, |reference|), abs_tol).

    Exact arithmetic (fractions), so tiny numbers are compared as they are, not rounded.

    >>> verify_numeric("The answer is 3.1416", "3.14159265", rel_tol=1e-4).score
    1.0
    >>> verify_numeric("The answer is 3.2", "3.14159265", abs_tol=0.01).reason
    'wrong answer'
    >>> verify_numeric("about seven", "7").reason
    'no answer found'
    """
    answer = extract_answer(completion, extract)
    if answer is None:
        return zero("no answer found")
    value = parse_number(answer)
    if value is None:
        return zero("not a number", answer)
    gold = parse_number(str(reference))
    assert gold is not None  # check_numeric_reference ran first
    return full(answer) if numbers_close(value, gold, rel_tol, abs_tol) else zero("wrong answer", answer)
