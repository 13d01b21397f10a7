"""Deterministic verifiers for RL from verifiable rewards. Imports no torch (and no sympy until a
worker needs it), so it is cheap to use on its own.

>>> from verifiers import verify
>>> verify("math", "The answer is \\\\boxed{\\\\frac{3}{4}}", "0.75").correct
True
"""
from verifiers.api import answers_equivalent, verify, verify_batch
from verifiers.extract import extract_answer
from verifiers.registry import available_kinds, register_verifier
from verifiers.result import VerifyResult

# The built-in kinds register themselves on import.
from verifiers import code as _code  # noqa: E402,F401
from verifiers import countdown as _countdown  # noqa: E402,F401
from verifiers import format_tags as _format_tags  # noqa: E402,F401
from verifiers import math_answer as _math_answer  # noqa: E402,F401
from verifiers import numeric as _numeric  # noqa: E402,F401
from verifiers.trl_adapter import trl_reward_func  # noqa: E402

__all__ = [
    "VerifyResult",
    "answers_equivalent",
    "available_kinds",
    "extract_answer",
    "register_verifier",
    "trl_reward_func",
    "verify",
    "verify_batch",
]
