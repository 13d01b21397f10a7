"""Countdown: reach a target from given numbers with + - * /, each number at most once.

Every problem is built backwards from a known solution: pick some of the numbers, combine them
pairwise with operations that keep every intermediate a positive integer (exact division only),
and take the result as the target. The worked solution lists those steps and answers with the
expression, e.g. `<think>25+50=75\n75*3=225</think><answer>(25+50)*3</answer>`.

| level | numbers given | numbers the solution uses |
|-------|---------------|---------------------------|
| 1     | 3             | 2                         |
| 2     | 3             | 3                         |
| 3     | 4             | 3-4                       |
| 4     | 5             | 3-5                       |
| 5     | 6             | 4-6                       |
"""
from __future__ import annotations

import random

from rlvr.tasks.base import Example
from rlvr.tasks.generator import GeneratorSource, r1_solution
from rlvr.tasks.registry import register_task

LEVELS: dict[int, tuple[int, int, int]] = {1: (3, 2, 2), 2: (3, 3, 3), 3: (4, 3, 4), 4: (5, 3, 5), 5: (6, 4, 6)}
"""level -> (numbers given, fewest used, most used)."""

SMALL = list(range(1, 11))
LARGE = [25, 50, 75, 100]
TARGET_RANGE = (10, 999)


def _combine(rng: random.Random, a: tuple[int, str], b: tuple[int, str]) -> tuple[int, str, str] | None:
    """One valid operation on two (value, expression) items: (value, expression, step) or None."""
    (x, ex), (y, ey) = (a, b) if a[0] >= b[0] else (b, a)  # larger first: x-y > 0 and x/y >= 1
    choices = ["+", "*"] + (["-"] if x > y else []) + (["/"] if y > 1 and x % y == 0 else [])
    op = rng.choice(choices)
    value = {"+": x + y, "-": x - y, "*": x * y, "/": x // y}[op]
    if op == "*" and (x == 1 or y == 1):  # *1 wastes a number and teaches nothing
        return None
    return value, f"{_operand(ex)}{op}{_operand(ey)}", f"{x}{op}{y}={value}"


def _operand(expression: str) -> str:
    """Parenthesise a compound operand so the expression reads the way it was built."""
    return expression if expression.isdigit() else f"({expression})"


def build_solution(rng: random.Random, numbers: list[int]) -> tuple[int, str, list[str]] | None:
    """Combine all `numbers` in random order: (target, expression, steps), or None if a step failed."""
    items = [(n, str(n)) for n in numbers]
    steps = []
    while len(items) > 1:
        i, j = rng.sample(range(len(items)), 2)
        combined = _combine(rng, items[i], items[j])
        if combined is None:
            return None
        value, expression, step = combined
        items = [it for k, it in enumerate(items) if k not in (i, j)] + [(value, expression)]
        steps.append(step)
    return items[0][0], items[0][1], steps


@register_task("countdown")
class CountdownSource(GeneratorSource):
    """`make_task("countdown", seed, difficulty)`; reference `{"numbers": [...], "target": t}`."""

    name = "countdown"
    kind = "countdown"
    max_difficulty = max(LEVELS)

    def make(self, rng: random.Random, level: int) -> Example:
        given, fewest, most = LEVELS[level]
        while True:  # rejection sampling: a few tries give a target in range
            numbers = [rng.choice(LARGE) if rng.random() < 0.25 else rng.choice(SMALL) for _ in range(given)]
            used = rng.sample(numbers, rng.randint(fewest, most))
            built = build_solution(rng, used)
            if built is None:
                continue
            target, expression, steps = built
            if TARGET_RANGE[0] <= target <= TARGET_RANGE[1] and target not in numbers:
                break
        listed = ",".join(map(str, numbers))
        return Example(
            prompt=f"Use {listed} to make {target} with + - * /, each number at most once.",
            reference={"numbers": numbers, "target": target},
            kind=self.kind,
            difficulty=level,
            solution=r1_solution("\n".join(steps), expression),
            meta={"expression": expression},
        )
