"""Run a candidate program against tests in a sandboxed subprocess (see `harness.py`).

This side owns the deadline: it reads per-test results from a pipe until the harness finishes or
the wall-clock limit passes, then kills the process group (and, with it, the PID namespace) and
removes the working directory.
"""
from __future__ import annotations

import ast
import json
import math
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HARNESS = Path(__file__).with_name("harness.py")
_UID_RANGE = (1_000_000_000, 2_000_000_000)
"""Sandbox uids are drawn from here: far above real accounts, one per run, so the process cap
counts only that run's processes and a sweep by uid touches nothing else."""
_RESULTS_LIMIT = 1 << 20


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one run of a candidate program."""

    wall_s: float = 10.0
    """Wall-clock seconds for the whole run (all tests)."""
    test_wall_s: float = 3.0
    """Wall-clock seconds for one test (program + setup + that test)."""
    memory_mb: int = 512
    """Address-space limit per process (RLIMIT_AS), MiB."""
    processes: int = 16
    """Most processes the sandbox may have at once (RLIMIT_NPROC under a uid of its own)."""
    file_mb: int = 16
    """Largest file the program may write, MiB (RLIMIT_FSIZE); also caps captured output."""

    @property
    def cpu_s(self) -> int:
        """CPU seconds per process (RLIMIT_CPU): a busy loop gets SIGXCPU near its wall limit."""
        return max(1, math.ceil(self.test_wall_s))


@dataclass
class SandboxReport:
    """What happened to each test."""

    passed: list[bool]
    details: list[str]
    namespaces: list[str] = field(default_factory=list)
    timed_out: bool = False
    output_tail: str = ""

    @property
    def fraction_passed(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 0.0


def run_tests(program: str, tests: list[str], setup: str = "", limits: SandboxLimits = SandboxLimits()) -> SandboxReport:
    """Run `program` (then `setup`, then one test) once per test, each in its own process.

    A test `assert EXPR == LITERAL` is judged here: the sandbox only returns repr(EXPR).
    """
    root = Path(tempfile.mkdtemp(prefix="rlvr-sandbox-"))  # 0700: the sandbox cannot see out.log
    uid = sandbox_uid() if os.geteuid() == 0 else None
    try:
        work = root / "work"
        work.mkdir(mode=0o700)
        if uid is not None:
            os.chown(work, uid, uid)
        with open(root / "out.log", "wb") as output:
            report = _run(program, tests, setup, limits, uid, work, output)
        report.output_tail = _tail(root / "out.log")
        return report
    finally:
        if uid is not None:
            _kill_uid(uid)
        shutil.rmtree(root, ignore_errors=True)


def sandbox_uid() -> int:
    """A fresh unprivileged uid for one run."""
    return secrets.randbelow(_UID_RANGE[1] - _UID_RANGE[0]) + _UID_RANGE[0]


def _run(program, tests, setup, limits: SandboxLimits, uid, work: Path, output) -> SandboxReport:
    results_read, results_write = os.pipe()
    value_tests = [value_test(test) for test in tests]
    config = {
        "program": program,
        "setup": setup,
        "tests": [test if split is None else {"value_of": split[0]} for test, split in zip(tests, value_tests)],
        "uid": uid,
        "results_fd": results_write,
        "limits": {
            "cpu_s": limits.cpu_s,
            "test_wall_s": limits.test_wall_s,
            "memory_mb": limits.memory_mb,
            "file_mb": limits.file_mb,
            "processes": limits.processes,
        },
    }
    deadline = time.monotonic() + limits.wall_s
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", str(HARNESS)],
            stdin=subprocess.PIPE,
            stdout=output,
            stderr=output,
            cwd=work,
            env={},  # no variable of ours reaches the program
            pass_fds=(results_write,),
            start_new_session=True,  # its own process group, killed as one
        )
    finally:
        os.close(results_write)
    try:
        _send_config(proc, config)
        lines, finished = _collect(results_read, deadline)
    finally:
        os.close(results_read)
        if uid is not None:
            # The sandbox's processes first (PID 1 of its namespace included), so that the
            # bootstrap outside reaps PID 1; killing the bootstrap first would leave PID 1 a
            # zombie for the machine's init to collect.
            _kill_uid(uid)
        _kill_group(proc)
    report = _report(lines, len(tests), timed_out=not finished, wall_s=limits.wall_s)
    _judge_values(report, lines, value_tests)
    return report


def _send_config(proc: subprocess.Popen, config: dict) -> None:
    try:
        proc.stdin.write(json.dumps(config).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # it died at once; the missing results say so


def _collect(fd: int, deadline: float) -> tuple[list[dict], bool]:
    """Result lines until the harness says done, closes the pipe, or the deadline passes."""
    buffer, lines = b"", []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return lines, False
        chunk = os.read(fd, 65536)
        if not chunk:
            return lines, any("done" in line for line in lines)
        buffer += chunk
        if len(buffer) > _RESULTS_LIMIT:
            return lines, False
        *complete, buffer = buffer.split(b"\n")
        lines += [json.loads(line) for line in complete if line.strip()]
        if any("done" in line for line in lines):
            return lines, True


def _report(lines: list[dict], test_count: int, timed_out: bool, wall_s: float) -> SandboxReport:
    passed, details = [False] * test_count, ["not run"] * test_count
    namespaces: list[str] = []
    for line in lines:
        if "test" in line and 0 <= line["test"] < test_count:
            passed[line["test"]], details[line["test"]] = bool(line["passed"]), str(line["detail"])
        namespaces = line.get("namespaces", namespaces)
    if timed_out:
        details = [d if d != "not run" else f"not run: the run passed its {wall_s:g} s limit" for d in details]
    return SandboxReport(passed, details, namespaces, timed_out)


def value_test(test: str) -> tuple[str, Any] | None:
    """(expression, expected value) for a test `assert EXPR == LITERAL` (either side literal),
    else None (the test then runs as an assert inside the sandbox).

    >>> value_test("assert add(1, 2) == 3")
    ('add(1, 2)', 3)
    >>> value_test("assert sorted(f([2, 1])) == [1, 2]")
    ('sorted(f([2, 1]))', [1, 2])
    >>> value_test("assert f(1) == g(1)") is None
    True
    """
    try:
        tree = ast.parse(test)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None
    compare = tree.body[0].test
    if not (isinstance(compare, ast.Compare) and len(compare.ops) == 1 and isinstance(compare.ops[0], ast.Eq)):
        return None
    left, right = compare.left, compare.comparators[0]
    for computed, literal in ((left, right), (right, left)):
        try:
            expected = ast.literal_eval(literal)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        if not isinstance(computed, ast.Constant):
            return ast.unparse(computed), expected
    return None


def _judge_values(report: SandboxReport, lines: list[dict], value_tests: list) -> None:
    for line in lines:
        index = line.get("test")
        if not isinstance(index, int) or not 0 <= index < len(value_tests) or value_tests[index] is None:
            continue
        if "value" not in line:
            continue  # it crashed, raised or timed out: the harness's detail says so
        expected = value_tests[index][1]
        try:
            actual = ast.literal_eval(line["value"])
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            report.passed[index] = False
            report.details[index] = f"the result is not a plain value: {line['value'][:80]}"
            continue
        report.passed[index] = _equal(actual, expected)
        report.details[index] = "" if report.passed[index] else f"got {line['value'][:80]}, expected {expected!r:.80}"


def _equal(actual: Any, expected: Any) -> bool:
    try:
        return bool(actual == expected)
    except Exception:  # e.g. comparing huge nested values
        return False


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _kill_uid(uid: int) -> None:
    """Last sweep: SIGKILL any process still running as the sandbox's uid (one that escaped the
    process group with setsid when no PID namespace was available)."""
    for _ in range(100):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    found = True
                    os.kill(int(entry), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass
        if not found:
            return
        time.sleep(0.01)


def _tail(path: Path, size: int = 2000) -> str:
    with open(path, "rb") as file:
        file.seek(max(0, path.stat().st_size - size))
        return file.read().decode(errors="replace")
