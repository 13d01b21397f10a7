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

    try:
        import triton
    except ImportError:  # a CPU smoke run
        triton = None
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "gpu": props.name if props else "none",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "triton": triton.__version__ if triton else "none",
        "commit": commit,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def sync() -> None:
    """Wait for the GPU (nothing to wait for in a CPU smoke run)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


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
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
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


SHAPES = {
    "0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                 num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),  # Qwen2-0.5B
    "1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),  # Qwen2.5-1.5B
    "7b": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
               num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),  # Qwen2.5-7B
    "tiny": dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),  # CPU smoke runs
}
"""Model shapes of the benchmarks (Qwen2 architecture, random weights)."""


def build_model(shape: str, device: str, eos_token_id: int | None, train: bool = False):
    """A Qwen2 model of `shape` with random weights (seed 0), bf16 on CUDA (fp32 on the CPU)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=32768, rope_theta=1e6, bos_token_id=None,
                         eos_token_id=eos_token_id, pad_token_id=0)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(dtype)
    model.train(train)
    model.generation_config.eos_token_id = eos_token_id
    model.generation_config.pad_token_id = 0
    return model


def shape_label(shape: str) -> str:
    return {"0.5b": "Qwen2-0.5B shape", "1.5b": "Qwen2.5-1.5B shape", "7b": "Qwen2.5-7B shape"}.get(shape, shape)
