"""Registers the `code` kind."""
from __future__ import annotations

from typing import Any

from verifiers.code.sandbox import SandboxLimits, run_tests
from verifiers.extract import extract_program
from verifiers.registry import register_verifier
from verifiers.result import VerifyResult, zero


def check_code_reference(reference: Any) -> None:
    if not isinstance(reference, dict):
        raise ValueError(f"code reference must be a dict with 'tests' (and optional 'setup'), got {type(reference).__name__}")
    tests = reference.get("tests")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise ValueError(f"code reference field 'tests' must be a non-empty list of strings, got {tests!r:.100}")
    if not isinstance(reference.get("setup", ""), str):
        raise ValueError("code reference field 'setup' must be a string")
    unknown = set(reference) - {"tests", "setup"}
    if unknown:
        raise ValueError(f"code reference has unknown fields {sorted(unknown)}; valid: ['setup', 'tests']")


@register_verifier("code", isolation="sandbox", check_reference=check_code_reference)
def verify_code(
    completion: str,
    reference: dict,
    *,
    timeout_s: float = 10.0,
    test_timeout_s: float = 3.0,
    memory_limit_mb: int = 512,
    max_processes: int = 16,
    max_file_mb: int = 16,
) -> VerifyResult:
    """Score = fraction of tests passed by the program (the last fenced code block of the
    completion, or the whole completion), run in a sandbox: each test in its own process with
    ``test_timeout_s`` wall/CPU seconds, ``memory_limit_mb`` address space, ``max_processes``
    processes and ``max_file_mb`` per file; ``timeout_s`` bounds the whole run.

    >>> done = "```python\\ndef add(a, b):\\n    return a + b\\n```"
    >>> verify_code(done, {"tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]}).score
    1.0
    >>> verify_code("import sys; sys.exit(0)", {"tests": ["assert add(1, 2) == 3"]}).reason
    'tests failed: 0/1 passed; test 0: the program called exit(0) before the test finished'
    """
    program = extract_program(completion)
    if not program.strip():
        return zero("no program found")
    limits = SandboxLimits(
        wall_s=timeout_s,
        test_wall_s=min(test_timeout_s, timeout_s),
        memory_mb=memory_limit_mb,
        processes=max_processes,
        file_mb=max_file_mb,
    )
    report = run_tests(program, reference["tests"], reference.get("setup", ""), limits)
    score = report.fraction_passed
    if score == 1.0:
        return VerifyResult(1.0, True, "correct", program)
    first = next(i for i, ok in enumerate(report.passed) if not ok)
    prefix = "timeout" if report.timed_out or any(map(_ran_out_of_time, report.details)) else "tests failed"
    reason = f"{prefix}: {sum(report.passed)}/{len(report.passed)} passed; test {first}: {report.details[first]}"
    return VerifyResult(score, False, reason, program)


def _ran_out_of_time(detail: str) -> bool:
    # A test past its wall or CPU limit is a timeout, not a failed test: counts of reasons tell
    # "too slow" apart from "wrong".
    return detail.startswith(("timeout", "crashed: SIGXCPU"))
