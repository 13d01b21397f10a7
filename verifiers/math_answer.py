"""The `math` kind: extract the final answer, then decide equivalence with the reference.

An answer written as its reference is (whitespace aside) and plain numbers are decided in the
calling process (the fast path: no sympy, no worker).
Anything else goes to math-verify inside a pooled worker process that is killed at the deadline,
because sympy can compute for hours on inputs like ``9^{9^{9^9}}`` and math-verify's own timeout
uses ``signal.alarm``, which fails off the main thread.
"""
from __future__ import annotations

import functools
import re
from fractions import Fraction
from typing import Any, Sequence

from verifiers.extract import DEFAULT_STRATEGIES, check_strategies, extract_answer
from verifiers.plain_numbers import canonical_integer, parse_number, same_number
from verifiers.registry import register_verifier
from verifiers.result import VerifyResult, full, zero

DEFAULT_REL_TOL = 1e-6


def check_math_reference(reference: Any) -> None:
    if isinstance(reference, bool) or not isinstance(reference, (str, int, float)):
        raise ValueError(f"math reference must be a string (LaTeX or plain), got {type(reference).__name__}")
    if isinstance(reference, str) and not reference.strip():
        raise ValueError("math reference is an empty string")


def math_fast_path(
    completion: str,
    reference: str,
    *,
    extract: Sequence[str] = DEFAULT_STRATEGIES,
    rel_tol: float = DEFAULT_REL_TOL,
) -> VerifyResult | None:
    """The answer when it needs no sympy (no answer found, the reference's own text, or two plain
    numbers); else None."""
    answer = extract_answer(completion, extract)
    if answer is None:
        return zero("no answer found")
    if same_text(answer, str(reference)):
        return full(answer)
    gold_digits, pred_digits = canonical_integer(str(reference)), canonical_integer(answer)
    if gold_digits is not None and pred_digits is not None:
        return full(answer) if pred_digits == gold_digits else zero("wrong answer", answer)
    gold, pred = parse_number(str(reference)), parse_number(answer)
    if gold is None or pred is None:
        return None
    return full(answer) if same_number(pred, gold, rel_tol) else zero("wrong answer", answer)


_SPACE_BETWEEN_NON_LETTERS = re.compile(r"(?<![A-Za-z]) | (?![A-Za-z])")


def same_text(answer: str, reference: str) -> bool:
    """Whether the answer is the reference's text, whitespace aside: equal without evaluating it,
    which matters for answers too big for sympy within the deadline (a sum of 20,000 terms).

    Spaces between letters are kept: ``\\pi r`` is not ``\\pir``.

    >>> same_text("1 +  1", "1+1"), same_text(r"\\pi r", r"\\pir")
    (True, False)
    """
    def normal(text: str) -> str:
        return _SPACE_BETWEEN_NON_LETTERS.sub("", " ".join(text.split()))

    return normal(answer) == normal(reference)


def math_verdict_key(
    completion: str, reference: str, *, extract: Sequence[str] = DEFAULT_STRATEGIES, rel_tol: float = DEFAULT_REL_TOL
) -> tuple:
    """Completions with the same final answer against the same reference get the same verdict."""
    return extract_answer(completion, extract), str(reference), rel_tol


@register_verifier(
    "math",
    isolation="worker",
    fast_path=math_fast_path,
    check_reference=check_math_reference,
    same_verdict_key=math_verdict_key,
)
def verify_math(
    completion: str,
    reference: str,
    *,
    extract: Sequence[str] = DEFAULT_STRATEGIES,
    rel_tol: float = DEFAULT_REL_TOL,
) -> VerifyResult:
    """Score 1 when the completion's final answer equals the reference mathematically.

    Options: ``extract`` (strategy names for `extract_answer`, in order) and ``rel_tol`` (relative
    tolerance between two non-integer numbers; integers must match exactly).

    >>> verify_math(r"... so the area is \\boxed{\\frac{1}{2}}", "0.5").score
    1.0
    >>> verify_math("<answer>x = 5</answer>", "5").reason
    'correct'
    >>> verify_math("The answer is 0.0000001", "0.0000002").reason
    'wrong answer'
    """
    check_strategies(extract)
    fast = math_fast_path(completion, reference, extract=extract, rel_tol=rel_tol)
    if fast is not None:
        return fast
    answer = extract_answer(completion, extract)
    assert answer is not None  # the fast path returns "no answer found" itself
    equal, reason = latex_equivalent(answer, str(reference), rel_tol)
    return full(answer) if equal else zero(reason, answer)


def latex_equivalent(answer: str, reference: str, rel_tol: float = DEFAULT_REL_TOL) -> tuple[bool, str]:
    """(equal?, reason) by math-verify, with two guards against its false positives.

    Runs without math-verify's signal-based timeouts: call it only where the caller can kill the
    process (a worker of `verifiers.pool`).
    """
    from math_verify import verify  # heavy (sympy): imported only inside workers

    gold, pred = _parse(reference), _parse(answer)
    if not gold:
        return False, f"unparsable reference: {reference[:80]}"
    if not pred:
        return False, "unparsable answer"
    guarded = _guard(pred[0], gold[0], rel_tol)
    if guarded is None and not _lenient_notation(answer + reference):
        guarded = _numeric_verdict(pred[0], gold[0])
    if guarded is not None:
        return guarded
    if verify(gold, pred, timeout_seconds=None):
        return True, "correct"
    return False, "wrong answer"


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> list:
    """math-verify's parse, cached: a group of G completions shares one reference, and many
    completions repeat the same final answer. (sympy objects are immutable, so sharing is safe.)"""
    from math_verify import parse

    return parse(_as_latex(text), parsing_timeout=None)


def _as_latex(text: str) -> str:
    if "$" in text or "\\boxed" in text or "\\(" in text or "\\[" in text:
        return text
    return f"${text}$"


CLEARLY_DIFFERENT = 1e-4
"""Relative difference beyond which two constant values are unequal without asking math-verify."""
SAME_TO = 1e-25
"""Relative difference (at 30 significant digits) within which they are equal without asking."""


def _lenient_notation(text: str) -> bool:
    # math-verify deliberately equates 50% with 50 and may relate degrees to radians: leave
    # answers written that way to it.
    return "%" in text or "\\circ" in text or "degree" in text


def _numeric_verdict(pred: Any, gold: Any) -> tuple[bool, str] | None:
    """The verdict for two constant expressions whose values settle it, else None.

    math-verify can spend seconds proving 2 + sqrt(5) != 4 symbolically (measured: 2 s against
    0.1 ms numerically), and in RL most answers are wrong. Values far apart are unequal; values
    equal to 25 digits are equal; anything in between (0.333333 against 1/3) goes to math-verify.
    """
    import sympy

    if not all(isinstance(x, sympy.Expr) and x.is_number for x in (pred, gold)):
        return None
    try:
        a, b = sympy.N(pred, 30), sympy.N(gold, 30)
        difference, size = abs(a - b), max(abs(a), abs(b))
        if not (difference.is_finite and size.is_finite):
            return None
        if difference > CLEARLY_DIFFERENT * size:
            return False, "wrong answer"
        if difference <= SAME_TO * size:
            return True, "correct"
    except (TypeError, ValueError, OverflowError):
        return None
    return None


def _guard(pred: Any, gold: Any, rel_tol: float) -> tuple[bool, str] | None:
    """Our decision where math-verify is known to be wrong; None to let it decide.

    - Two numbers: math-verify rounds to 6 digits, so 1e-7 equals 2e-7.
    - An equation against a value: math-verify compares the right-hand side only, so
      ``x^2 = 25`` or ``x + y = 2`` would "equal" 25 or 2. Accept ``x = 5`` style only.
    """
    import sympy

    if getattr(pred, "is_Number", False) and getattr(gold, "is_Number", False):
        a, b = Fraction(str(pred)), Fraction(str(gold))
        return (True, "correct") if same_number(a, b, rel_tol) else (False, "wrong answer")
    for side, other in ((pred, gold), (gold, pred)):
        if isinstance(side, sympy.Eq) and not isinstance(other, sympy.Eq) and not side.lhs.is_Symbol:
            return False, "wrong answer: an equation is not a value"
    return None
