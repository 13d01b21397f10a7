"""The `countdown` kind: reach the target with + - * / using each given number at most once.

The expression is parsed with `ast` and evaluated by walking the tree with exact fractions; Python
never evaluates model output.
"""
from __future__ import annotations

import ast
import operator
from collections import Counter
from fractions import Fraction
from typing import Any

from verifiers.extract import last_boxed, last_tag
from verifiers.registry import register_verifier
from verifiers.result import VerifyResult, full, zero

MAX_EXPRESSION_CHARS = 1000
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class _Rejected(Exception):
    """The expression breaks a rule; the message is the reason."""


def check_countdown_reference(reference: Any) -> None:
    if not isinstance(reference, dict):
        raise ValueError(f"countdown reference must be a dict with numbers and target, got {type(reference).__name__}")
    numbers, target = reference.get("numbers"), reference.get("target")
    if not isinstance(numbers, list) or not all(_is_int(n) for n in numbers):
        raise ValueError(f"countdown reference field 'numbers' must be a list of ints, got {numbers!r}")
    if not _is_int(target):
        raise ValueError(f"countdown reference field 'target' must be an int, got {target!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@register_verifier("countdown", check_reference=check_countdown_reference)
def verify_countdown(completion: str, reference: dict, *, use_all_numbers: bool = False) -> VerifyResult:
    """Score 1 when the expression (in <answer> tags, a \\boxed{}, or the last line) equals the
    target, uses only + - * / and parentheses, and uses each given number at most once (exactly
    once with ``use_all_numbers=True``). A trailing ``= target`` is allowed.

    >>> ref = {"numbers": [2, 3, 5], "target": 16}
    >>> verify_countdown("<answer>(3 + 5) * 2</answer>", ref).score
    1.0
    >>> verify_countdown("<answer>(3 + 5) * 2 * 2</answer>", ref).reason
    'number not available: 2 used more times than given'
    >>> verify_countdown("<answer>__import__('os')</answer>", ref).reason
    'not allowed: Call'
    """
    expression = _find_expression(completion)
    if expression is None:
        return zero("no answer found")
    if len(expression) > MAX_EXPRESSION_CHARS:
        return zero(f"expression too long: over {MAX_EXPRESSION_CHARS} characters", expression[:100])
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return zero("not an expression", expression)
    try:
        used: list[int] = []
        value = _evaluate(tree.body, used)
        _check_numbers(used, reference["numbers"], use_all_numbers)
    except _Rejected as rejection:
        return zero(str(rejection), expression)
    if value != reference["target"]:
        return zero(f"wrong answer: equals {value}, target {reference['target']}", expression)
    return full(expression)


def _find_expression(completion: str) -> str | None:
    found = last_tag(completion, "answer") or last_boxed(completion)
    if found is None:
        lines = [line for line in completion.strip().splitlines() if line.strip()]
        found = lines[-1] if lines else None
    if found is None:
        return None
    # "(3 + 5) * 2 = 16": the left side is the expression.
    return found.split("=")[0].strip().strip("$").replace("\\times", "*").replace("×", "*").replace("÷", "/") or None


def _evaluate(node: ast.AST, used: list[int]) -> Fraction:
    if isinstance(node, ast.Constant):
        if not _is_int(node.value):
            raise _Rejected(f"not allowed: constant {node.value!r} (only the given integers)")
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left, used), _evaluate(node.right, used)
        if isinstance(node.op, ast.Div) and right == 0:
            raise _Rejected("division by zero")
        return _OPERATORS[type(node.op)](left, right)
    name = type(node.op).__name__ if isinstance(node, (ast.BinOp, ast.UnaryOp)) else type(node).__name__
    raise _Rejected(f"not allowed: {name}")


def _check_numbers(used: list[int], given: list[int], use_all: bool) -> None:
    available = Counter(given)
    for number, count in Counter(used).items():
        if count > available[number]:
            what = "not given" if available[number] == 0 else "used more times than given"
            raise _Rejected(f"number not available: {number} {what}")
    if use_all and Counter(used) != available:
        raise _Rejected("not all numbers used")
