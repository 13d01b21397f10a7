"""Linear equations in one unknown with an integer solution.

| level | form          | example          |
|-------|---------------|------------------|
| 1     | x+b=c         | x+5=12           |
| 2     | ax=c          | 3x=-21           |
| 3     | ax+b=c        | 3x-5=16          |
| 4     | ax+b=cx+d     | 5x+3=2x+12       |
| 5     | a(x+b)=cx+d   | 2(x-3)=-4x+18    |

The worked solution moves terms one line at a time, e.g. for 3x-5=16:
`3x-5=16` / `3x=16+5=21` / `x=21/3=7`.
"""
from __future__ import annotations

import random

from rlvr.tasks.base import Example
from rlvr.tasks.generator import GeneratorSource, r1_solution
from rlvr.tasks.registry import register_task


def signed(v: int) -> str:
    """`+5` or `-5`: a term written after another term."""
    return f"+{v}" if v >= 0 else str(v)


def x_term(a: int) -> str:
    """`3x`, `x`, `-x`, `-3x`."""
    return {1: "x", -1: "-x"}.get(a, f"{a}x")


def signed_x(a: int) -> str:
    """`+3x`, `+x`, `-x`, `-3x`: an x term written after another term."""
    return ("+" if a > 0 else "") + x_term(a)


def linear(a: int, b: int) -> str:
    """ax+b with the usual shortcuts (no `+0`, no `1x`)."""
    return x_term(a) + (signed(b) if b else "")


def _nonzero(rng: random.Random, low: int, high: int) -> int:
    while True:
        v = rng.randint(low, high)
        if v:
            return v


def _divide(a: int, rhs: int) -> list[str]:
    """From `ax=rhs` to `x=...`."""
    x = rhs // a
    if a == 1:
        return []
    if a == -1:
        return [f"x={-rhs}"]
    return [f"x={rhs}/{a}={x}" if a > 0 else f"x={rhs}/({a})={x}"]


@register_task("linear_equation")
class LinearEquationSource(GeneratorSource):
    """`make_task("linear_equation", seed, difficulty)`; the answer is the integer x."""

    name = "linear_equation"
    kind = "math"
    max_difficulty = 5

    def make(self, rng: random.Random, level: int) -> Example:
        build = {1: self._level1, 2: self._level2, 3: self._level3, 4: self._level4, 5: self._level5}[level]
        equation, lines, x = build(rng)
        return Example(
            prompt=f"Solve: {equation}",
            reference=str(x),
            kind=self.kind,
            difficulty=level,
            solution=r1_solution("\n".join([equation, *lines]), str(x)),
            meta={"equation": equation},
        )

    @staticmethod
    def _level1(rng: random.Random) -> tuple[str, list[str], int]:
        x, b = rng.randint(0, 20), rng.randint(1, 20)
        c = x + b
        return f"x+{b}={c}", [f"x={c}-{b}={x}"], x

    @staticmethod
    def _level2(rng: random.Random) -> tuple[str, list[str], int]:
        x, a = rng.randint(-10, 10), rng.randint(2, 9)
        c = a * x
        return f"{a}x={c}", _divide(a, c), x

    @staticmethod
    def _level3(rng: random.Random) -> tuple[str, list[str], int]:
        x, a, b = rng.randint(-10, 10), rng.randint(2, 9), _nonzero(rng, -20, 20)
        c = a * x + b
        rhs = c - b
        return f"{linear(a, b)}={c}", [f"{x_term(a)}={c}{signed(-b)}={rhs}", *_divide(a, rhs)], x

    @staticmethod
    def _solve_two_sided(a: int, b: int, c: int, d: int) -> list[str]:
        """Lines from ax+b=cx+d (a != c) to x=..."""
        coef, rhs = a - c, d - b
        return [f"{x_term(a)}{signed_x(-c)}={d}{signed(-b)}", f"{x_term(coef)}={rhs}", *_divide(coef, rhs)]

    def _level4(self, rng: random.Random) -> tuple[str, list[str], int]:
        x, a, b = rng.randint(-10, 10), _nonzero(rng, -9, 9), _nonzero(rng, -20, 20)
        c = _nonzero(rng, -9, 9)
        while c == a:
            c = _nonzero(rng, -9, 9)
        d = (a - c) * x + b
        return f"{linear(a, b)}={linear(c, d)}", self._solve_two_sided(a, b, c, d), x

    def _level5(self, rng: random.Random) -> tuple[str, list[str], int]:
        x, a, b = rng.randint(-20, 20), rng.randint(2, 9), _nonzero(rng, -9, 9)
        c = _nonzero(rng, -9, 9)
        while c == a:
            c = _nonzero(rng, -9, 9)
        d = a * (x + b) - c * x
        equation = f"{a}({linear(1, b)})={linear(c, d)}"
        expanded = f"{linear(a, a * b)}={linear(c, d)}"
        return equation, [expanded, *self._solve_two_sided(a, a * b, c, d)], x
