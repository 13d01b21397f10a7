"""Multi-digit arithmetic (+, -, *) with column-by-column worked solutions.

Levels (operands x digits per operand):

| level | operands | digits |
|-------|----------|--------|
| 1     | 2        | 1      |
| 2     | 2        | 2      |
| 3     | 2        | 3      |
| 4     | 3        | 2      |
| 5     | 3        | 3      |

The worked solution is mechanical so a small character-level model can learn it: one line per
binary step (`*` before `+`/`-`, then left to right), each with its columns written right to left.

>>> import random
>>> ArithmeticSource(ops=["+"]).make(random.Random(0), 2).solution
'<think>59+63: 9+3=12,5+6+1=12 =122</think><answer>122</answer>'

Addition columns carry (`4+3+1=8`); subtraction columns borrow (`12-8=4,5-1-3=1`); a product by
a multi-digit number is the sum of its partial products.
"""
from __future__ import annotations

import random

from rlvr.tasks.base import Example
from rlvr.tasks.generator import GeneratorSource, r1_solution
from rlvr.tasks.registry import register_task

LEVELS: dict[int, tuple[int, int]] = {1: (2, 1), 2: (2, 2), 3: (2, 3), 4: (3, 2), 5: (3, 3)}
"""level -> (number of operands, digits per operand)."""

VALID_OPS = ("+", "-", "*")


def _digits(n: int) -> list[int]:
    """Digits of n >= 0, least significant first."""
    return [int(c) for c in reversed(str(n))]


def add_columns(a: int, b: int) -> str:
    """Column addition of a, b >= 0, right to left, each column with its carry."""
    da, db = _digits(a), _digits(b)
    width = max(len(da), len(db))
    da += [0] * (width - len(da))
    db += [0] * (width - len(db))
    steps, carry = [], 0
    for x, y in zip(da, db):
        total = x + y + carry
        steps.append(f"{x}+{y}{'+1' if carry else ''}={total}")
        carry = total // 10
    return ",".join(steps)


def sub_columns(a: int, b: int) -> str:
    """Column subtraction a - b for a >= b >= 0, right to left, borrowing ten when needed."""
    da, db = _digits(a), _digits(b)
    db += [0] * (len(da) - len(db))
    steps, borrow = [], 0
    for x, y in zip(da, db):
        need = x - borrow < y
        result = x + (10 if need else 0) - borrow - y
        steps.append(f"{'1' if need else ''}{x}{'-1' if borrow else ''}-{y}={result}")
        borrow = 1 if need else 0
    return ",".join(steps)


def mul_steps(a: int, b: int) -> str:
    """a * b for a, b >= 0: one partial product per digit of b, then their sum."""
    if b < 10:
        return f"{a}*{b}={a * b}"
    partials = [a * d * 10**i for i, d in enumerate(_digits(b))]
    lines = [f"{a}*{d * 10**i}={p}" for i, (d, p) in enumerate(zip(_digits(b), partials))]
    return ",".join(lines) + f",{'+'.join(map(str, partials))}={a * b}"


def signed_step(x: int, op: str, y: int) -> tuple[str, int]:
    """Worked text and value of `x op y` on signed ints, via the column methods on magnitudes."""
    if op == "*":
        value = x * y
        return f"{_show(x)}*{_show(y)}: {mul_steps(abs(x), abs(y))} ={value}", value
    y_signed = y if op == "+" else -y
    value = x + y_signed
    if (x >= 0) == (y_signed >= 0):  # same sign: add magnitudes
        detail = add_columns(abs(x), abs(y_signed))
    else:  # opposite signs: larger magnitude minus smaller
        big, small = max(abs(x), abs(y_signed)), min(abs(x), abs(y_signed))
        detail = sub_columns(big, small)
        if not (op == "-" and x == big):  # say which magnitude is subtracted from which
            detail = f"{big}-{small}: {detail}"
    return f"{_show(x)}{op}{_show(y)}: {detail} ={value}", value


def _show(n: int) -> str:
    return f"({n})" if n < 0 else str(n)


def evaluate_with_steps(operands: list[int], ops: list[str]) -> tuple[list[str], int]:
    """Reduce `operands[0] ops[0] operands[1] ...`: products first, then left to right."""
    values, pending = list(operands), list(ops)
    lines = []
    for wanted in (("*",), ("+", "-")):
        i = 0
        while i < len(pending):
            if pending[i] in wanted:
                line, value = signed_step(values[i], pending[i], values[i + 1])
                lines.append(line)
                values[i : i + 2] = [value]
                del pending[i]
            else:
                i += 1
    return lines, values[0]


@register_task("arithmetic")
class ArithmeticSource(GeneratorSource):
    """`make_task("arithmetic", seed, difficulty, ops=["+", "-", "*"])`."""

    name = "arithmetic"
    kind = "math"
    max_difficulty = max(LEVELS)

    def __init__(self, seed: int = 0, difficulty: int | list[int] = 1, ops: list[str] | None = None,
                 held_out_fraction: float = 0.1):
        self.ops = list(ops) if ops is not None else list(VALID_OPS)
        bad = [op for op in self.ops if op not in VALID_OPS]
        if bad or not self.ops:
            raise ValueError(f"arithmetic: ops must be a non-empty subset of {list(VALID_OPS)}, got {ops!r}")
        super().__init__(seed=seed, difficulty=difficulty, held_out_fraction=held_out_fraction)

    def make(self, rng: random.Random, level: int) -> Example:
        count, digits = LEVELS[level]
        low = 0 if digits == 1 else 10 ** (digits - 1)
        operands = [rng.randint(low, 10**digits - 1) for _ in range(count)]
        ops = [rng.choice(self.ops) for _ in range(count - 1)]
        expression = str(operands[0]) + "".join(f"{op}{n}" for op, n in zip(ops, operands[1:]))
        lines, value = evaluate_with_steps(operands, ops)
        return Example(
            prompt=f"{expression}=?",
            reference=str(value),
            kind=self.kind,
            difficulty=level,
            solution=r1_solution("\n".join(lines), str(value)),
            meta={"expression": expression},
        )
