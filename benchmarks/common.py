"""Shared helpers of the GPU benchmarks: device timing, peak memory, the result table, a record.

Timing: warm up first, time with CUDA events (or synchronise
before reading the host clock), repeat, report the median. Every benchmark prints a table whose
ratio column compares each row with the peer named as baseline, and writes a JSON record
(environment, command, commit, rows) to --out.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch


@dataclass
class Row:
    name: str
    """What was measured (peer or ours, with its settings)."""
    value: float | None
    """The measured figure (ms or tok/s; see `unit`); None when the row could not run."""
    unit: str
    """"ms" (lower is better) or "tok/s" (higher is better)."""
    peak_gib: float | None = None
    """Peak device memory above what was allocated before the measured call (GiB)."""
    note: str = ""
    """Why a row is missing, or its settings."""
    samples: list[float] = field(default_factory=list)
    """Every timed repetition, before the median."""


def environment() -> dict:
    props = torch.cuda.get_device_properties(0) if torch.cuda.is_available() else None
    # the device machine gets the working tree without .git: the caller passes RLVR_COMMIT there
    commit = os.environ.get("RLVR_COMMIT", "")
    if not commit:
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    check=False).stdout.strip()
        except OSError:
            commit = ""
    import transformers
    import triton

    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "gpu": props.name if props else "none",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "triton": triton.__version__,
        "commit": commit,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def cuda_time_ms(fn: Callable[[], object], warmup: int, reps: int) -> list[float]:
    """Wall time of `fn` in ms, measured with CUDA events, `reps` times after `warmup` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def host_time_s(fn: Callable[[], object], reps: int) -> list[float]:
    """Host wall time in seconds (for work with host syncs inside, e.g. generation)."""
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def peak_above(fn: Callable[[], object]) -> float:
    """Peak memory (GiB) allocated by one call of `fn` above what was allocated before it."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def print_table(title: str, rows: list[Row], baseline: str) -> None:
    """Rows with a ratio to the row named `baseline` (speed-up: >1 is better than the baseline)."""
    base = next((r for r in rows if r.name == baseline and r.value), None)
    print(f"\n## {title}")
    print(f"| what | {rows[0].unit if rows else ''} | peak GiB | vs {baseline} | note |")
    print("|---|---|---|---|---|")
    for r in rows:
        if r.value is None:
            ratio = "-"
        elif base is None:
            ratio = "?"
        elif r.unit == "ms" or r.unit == "s":
            ratio = f"{base.value / r.value:.2f}x"
        else:
            ratio = f"{r.value / base.value:.2f}x"
        value = "-" if r.value is None else f"{r.value:,.1f}"
        peak = "-" if r.peak_gib is None else f"{r.peak_gib:.2f}"
        print(f"| {r.name} | {value} | {peak} | {ratio} | {r.note} |")
    sys.stdout.flush()


def save(path: str | None, title: str, rows: list[Row], extra: dict | None = None) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    record = {"title": title, "env": environment(), "rows": [asdict(r) for r in rows], **(extra or {})}
    Path(path).write_text(json.dumps(record, indent=1))


def out_path(name: str) -> str | None:
    """Where a benchmark writes its JSON: $OUT/<name> on the device machine, else nowhere."""
    out = os.environ.get("OUT")
    return str(Path(out) / name) if out else None
