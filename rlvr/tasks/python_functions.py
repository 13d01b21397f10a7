"""Small Python function tasks with hidden tests (verifier kind `code`).

Each template is a family of problems parametrised by a number or letter `k`
("Write a Python function add7(x) that returns x+7."). The expected outputs of the hidden tests
come from a plain Python function of ours (`expected`); the reference program (`body`) is the
worked solution, and the tests check that the two agree through the sandboxed `code` verifier.

| level | what the function does                          |
|-------|-------------------------------------------------|
| 1     | one arithmetic expression                        |
| 2     | a condition                                      |
| 3     | a loop over a list                               |
| 4     | string handling                                  |
| 5     | a small algorithm (Fibonacci, gcd, primes, ...)  |
"""
from __future__ import annotations

import math
import random
import string
from dataclasses import dataclass
from typing import Any, Callable

from rlvr.tasks.base import Example
from rlvr.tasks.generator import GeneratorSource, r1_solution
from rlvr.tasks.registry import register_task

TESTS_PER_PROBLEM = 4


@dataclass(frozen=True)
class FunctionTemplate:
    """One family of function-writing problems; `{k}` in the text fields is the parameter."""

    level: int
    name: str
    """Function name, e.g. `add{k}`."""
    params: str
    """Parameter list as written in the signature, e.g. `x` or `xs`."""
    task: str
    """What the function returns, completing "that ...", e.g. `returns x+{k}`."""
    plan: str
    """The short reasoning of the worked solution."""
    body: str
    """The function body of the reference program, indented four spaces."""
    expected: Callable[[Any, tuple], Any]
    """expected(k, args) -> the correct return value; the hidden tests come from it."""
    make_args: Callable[[random.Random], tuple]
    """A random argument tuple for one hidden test."""
    make_k: Callable[[random.Random], Any]


def _ints(low: int, high: int) -> Callable[[random.Random], tuple]:
    return lambda rng: (rng.randint(low, high),)


def _int_list(rng: random.Random) -> tuple:
    return ([rng.randint(-9, 20) for _ in range(rng.randint(0, 6))],)


def _word(rng: random.Random) -> tuple:
    return ("".join(rng.choice("abcdeiklmnorst") for _ in range(rng.randint(0, 8))),)


def _k(low: int, high: int) -> Callable[[random.Random], int]:
    return lambda rng: rng.randint(low, high)


def _letter(rng: random.Random) -> str:
    return rng.choice(string.ascii_lowercase)


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def _fib(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


T = FunctionTemplate
TEMPLATES: list[FunctionTemplate] = [
    # level 1: one expression
    T(1, "add{k}", "x", "returns x+{k}", "add {k} to x", "    return x + {k}",
      lambda k, a: a[0] + k, _ints(-50, 50), _k(1, 99)),
    T(1, "times{k}", "x", "returns x*{k}", "multiply x by {k}", "    return x * {k}",
      lambda k, a: a[0] * k, _ints(-50, 50), _k(2, 99)),
    T(1, "minus{k}", "x", "returns x-{k}", "subtract {k} from x", "    return x - {k}",
      lambda k, a: a[0] - k, _ints(-50, 50), _k(1, 99)),
    # level 2: a condition
    T(2, "at_least{k}", "x", "returns True if x>={k}, else False", "compare x with {k}",
      "    return x >= {k}", lambda k, a: a[0] >= k, _ints(-20, 120), _k(0, 99)),
    T(2, "is_mult{k}", "x", "returns True if x is divisible by {k}, else False", "x mod {k} is 0",
      "    return x % {k} == 0", lambda k, a: a[0] % k == 0, _ints(0, 200), _k(2, 99)),
    T(2, "cap{k}", "x", "returns x, but at most {k}", "the smaller of x and {k}",
      "    if x > {k}:\n        return {k}\n    return x", lambda k, a: min(a[0], k), _ints(-20, 120), _k(0, 99)),
    T(2, "dist{k}", "x", "returns the distance between x and {k}", "absolute value of x-{k}",
      "    return abs(x - {k})", lambda k, a: abs(a[0] - k), _ints(-50, 150), _k(0, 99)),
    # level 3: a loop over a list
    T(3, "count{k}", "xs", "returns how many items of the list xs equal {k}", "count items equal to {k}",
      "    return sum(1 for v in xs if v == {k})", lambda k, a: a[0].count(k),
      lambda rng: ([rng.randint(0, 12) for _ in range(rng.randint(0, 8))],), _k(0, 12)),
    T(3, "sum_over{k}", "xs", "returns the sum of the items of xs greater than {k}", "sum items above {k}",
      "    return sum(v for v in xs if v > {k})", lambda k, a: sum(v for v in a[0] if v > k), _int_list, _k(0, 15)),
    T(3, "add_all{k}", "xs", "returns a new list with {k} added to each item of xs", "add {k} to each item",
      "    return [v + {k} for v in xs]", lambda k, a: [v + k for v in a[0]], _int_list, _k(1, 99)),
    T(3, "first_over{k}", "xs", "returns the first item of xs greater than {k}, or -1 if none",
      "scan until an item exceeds {k}", "    for v in xs:\n        if v > {k}:\n            return v\n    return -1",
      lambda k, a: next((v for v in a[0] if v > k), -1), _int_list, _k(0, 15)),
    # level 4: strings
    T(4, "repeat{k}", "s", "returns the string s repeated {k} times", "s times {k}", "    return s * {k}",
      lambda k, a: a[0] * k, _word, _k(2, 9)),
    T(4, "count_{k}", "s", "returns how many times the letter '{k}' occurs in s", "count '{k}' in s",
      "    return s.count('{k}')", lambda k, a: a[0].count(k), _word, _letter),
    T(4, "wrap_{k}", "s", "returns s with '{k}' added at the start and the end", "'{k}' + s + '{k}'",
      "    return '{k}' + s + '{k}'", lambda k, a: k + a[0] + k, _word, _letter),
    T(4, "drop{k}", "s", "returns s without its first {k} characters", "slice from {k}",
      "    return s[{k}:]", lambda k, a: a[0][k:], _word, _k(1, 9)),
    # level 5: small algorithms
    T(5, "fib_mod{k}", "n", "returns the n-th Fibonacci number (fib(0)=0, fib(1)=1) modulo {k}",
      "iterate a, b = b, a+b n times", "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a % {k}",
      lambda k, a: _fib(a[0]) % k, _ints(0, 40), _k(2, 99)),
    T(5, "gcd{k}", "n", "returns the greatest common divisor of n and {k}", "Euclid on n and {k}",
      "    a, b = n, {k}\n    while b:\n        a, b = b, a % b\n    return a",
      lambda k, a: math.gcd(a[0], k), _ints(1, 500), _k(2, 99)),
    T(5, "count_div{k}", "n", "returns how many of the numbers 1..n are divisible by {k}", "n // {k}",
      "    return n // {k}", lambda k, a: a[0] // k, _ints(0, 1000), _k(2, 99)),
    T(5, "prime_plus{k}", "n", "returns True if n+{k} is a prime number, else False", "trial division of n+{k}",
      "    m = n + {k}\n    if m < 2:\n        return False\n    d = 2\n    while d * d <= m:\n        if m % d == 0:\n"
      "            return False\n        d += 1\n    return True",
      lambda k, a: _is_prime(a[0] + k), _ints(0, 200), _k(1, 99)),
]


def render_call(name: str, args: tuple) -> str:
    return f"{name}({', '.join(map(repr, args))})"


@register_task("python_functions")
class PythonFunctionsSource(GeneratorSource):
    """`make_task("python_functions", seed, difficulty)`; reference `{"tests": [...], "setup": ""}`."""

    name = "python_functions"
    kind = "code"
    max_difficulty = 5

    def make(self, rng: random.Random, level: int) -> Example:
        template = rng.choice([t for t in TEMPLATES if t.level == level])
        k = template.make_k(rng)
        name = template.name.format(k=k)
        calls = [template.make_args(rng) for _ in range(TESTS_PER_PROBLEM)]
        tests = [f"assert {render_call(name, args)} == {template.expected(k, args)!r}" for args in calls]
        program = f"def {name}({template.params}):\n{template.body.format(k=k)}"
        return Example(
            prompt=f"Write a Python function {name}({template.params}) that {template.task.format(k=k)}.",
            reference={"tests": tests, "setup": ""},
            kind=self.kind,
            difficulty=level,
            solution=r1_solution(template.plan.format(k=k), f"```python\n{program}\n```"),
            meta={"function": name},
        )
