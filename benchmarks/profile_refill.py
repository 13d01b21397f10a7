"""Where a refill run spends its time: per check, the host's work and what the GPU did meanwhile.

Same workload as `bench_rollout.py --engines fast_refill` (random-weight model of `--shape`,
`--prompt-len` prompts x G, lognormal completion lengths capped at `--new-tokens`, `--rows` rows
refilled from `--factor` x rows sequences). One warm-up run (graph captures), then one timed run per
`--check-every` (refill_check_every), with CUDA events around every check:

- host check ms: the check's host work (collect, refill, compaction), also per phase;
- GPU check ms: the GPU's time from the check's first to its last queued work, also per phase;
  close to the host's when the GPU caught up and waited for the launches (the host sets the
  pace), the kernels' own time when the GPU was still busy with the steps queued before;
- GPU ms a step: the GPU's time between checks over the steps queued between them.

Then torch.profiler over `--trace-checks` checks of the run's middle: host time per op (which call
blocks) and GPU time per kernel; the table goes to stdout and `$OUT/profile_refill.txt`.

    python benchmarks/profile_refill.py [--shape 0.5b] [--rows 256] [--factor 16] [--horizon 9]
        [--check-every 16,32] [--flag-lead 4,8] [--trace-checks 12]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_rollout import Workload, end_lengths, fast_config, fast_runner, prompts  # noqa: E402
from benchmarks.common import SHAPES, build_model, environment  # noqa: E402


PHASES = ("_collect_done", "_prefill", "_refill", "_running")
"""RefillRun methods a check calls, in order (a check ends with `_running`); each phase's time runs
from the mark before it (`_prefill`: the refill's work up to and including the newcomers' forward;
`_refill`: the rest of the refill)."""


class CheckClock:
    """Marks each check's start (after FinishedFlags.read) and the end of each phase with host
    clocks and, on CUDA, events; optionally profiles checks [first, first + count)."""

    def __init__(self, cuda: bool, trace: tuple[int, int] | None = None):
        self.cuda, self.trace, self.prof = cuda, trace, None
        self.checks: list[list[tuple]] = []  # per check: (phase, host time, event), from "start"
        self._open: list[tuple] | None = None

    def _event(self):
        if not self.cuda:
            return None
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def start(self) -> None:
        n = len(self.checks)
        if self.trace and n == self.trace[0]:
            from torch.profiler import ProfilerActivity, profile
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
            self.prof = profile(activities=acts)
            self.prof.start()
        if self.trace and n == self.trace[0] + self.trace[1]:
            self.finish()
        self._open = [("start", time.perf_counter(), self._event())]

    def mark(self, phase: str) -> None:
        if self._open is None:  # the first fill and the final collection are not checks
            return
        self._open.append((phase, time.perf_counter(), self._event()))
        if phase == PHASES[-1]:
            self.checks.append(self._open)
            self._open = None

    def finish(self) -> None:
        """Stops the profiler (also when the run ended before the last traced check)."""
        if self.prof is not None and self.trace is not None:
            self.prof.stop()
            self.trace = None

    def summary(self, steps: int, wall_s: float) -> dict:
        n = len(self.checks)
        host = {p: 0.0 for p in PHASES}
        gpu = {p: 0.0 for p in PHASES}
        if self.cuda and n > 1:
            torch.cuda.synchronize()
        for marks in self.checks:
            for (_, t0, e0), (phase, t1, e1) in zip(marks, marks[1:]):
                host[phase] += t1 - t0
                if self.cuda:
                    gpu[phase] += e0.elapsed_time(e1) / 1e3
        out = {"checks": n, "steps": steps, "wall_s": round(wall_s, 3),
               "host_check_s": round(sum(host.values()), 3),
               "host_check_ms_mean": round(sum(host.values()) * 1e3 / max(n, 1), 3),
               "host_s": {p: round(v, 3) for p, v in host.items()}}
        if self.cuda and n > 1:
            between = sum(self.checks[i][-1][2].elapsed_time(self.checks[i + 1][0][2]) for i in range(n - 1)) / 1e3
            out.update(gpu_check_s=round(sum(gpu.values()), 3),
                       gpu_check_ms_mean=round(sum(gpu.values()) * 1e3 / n, 3),
                       gpu_s={p: round(v, 3) for p, v in gpu.items()},
                       gpu_between_s=round(between, 3), gpu_ms_per_step=round(between * 1e3 / max(steps - n, 1), 4))
        return out


def patched(clock: CheckClock):
    """FinishedFlags.read and the PHASES methods of RefillRun with the clock's hooks; returns
    the function that restores them."""
    from rlvr.rollout import fast_refill

    saved = [(fast_refill.FinishedFlags, "read")] + [(fast_refill.RefillRun, p) for p in PHASES]
    originals = [getattr(owner, name) for owner, name in saved]

    def timed_read(self):
        out = originals[0](self)
        clock.start()
        return out

    def timed(name, method):
        def wrapped(*args, **kwargs):
            out = method(*args, **kwargs)
            clock.mark(name)
            return out
        return wrapped
    fast_refill.FinishedFlags.read = timed_read
    for (owner, name), method in zip(saved[1:], originals[1:]):
        setattr(owner, name, timed(name, method))

    def restore():
        for (owner, name), method in zip(saved, originals):
            setattr(owner, name, method)
    return restore


def profile_tables(prof, top: int) -> str:
    cpu = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
    parts = [f"host time per op ({top} largest by self time)\n{cpu}"]
    if torch.cuda.is_available():
        gpu = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=top)
        parts.append(f"GPU time per kernel ({top} largest)\n{gpu}")
    return "\n".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="0.5b", choices=sorted(SHAPES))
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--factor", type=int, default=16, help="sequences asked for, in multiples of --rows")
    p.add_argument("--horizon", type=int, default=9, help="FastEngineConfig.refill_horizon")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=1024)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--sigma", type=float, default=1.0)
    p.add_argument("--check-every", default="16,32", help="FastEngineConfig.refill_check_every values, one run each")
    p.add_argument("--flag-lead", default="4", help="fast_refill.FLAG_LEAD_DIVISOR values: each --check-every "
                                                      "runs once per value")
    p.add_argument("--trace-checks", type=int, default=12, help="checks profiled in the first timed run (0: none)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    from rlvr.rollout import fast_refill

    cuda = args.device == "cuda"
    model = build_model(args.shape, args.device, eos_token_id=None)
    total = args.rows * args.factor
    end_at = end_lengths(total, args.new_tokens, args.sigma, seed=total)
    prompt_ids = prompts(total // args.group, args.prompt_len, SHAPES[args.shape]["vocab_size"], seed=total)
    work = Workload(args.prompt_len, args.new_tokens, args.group, args.device)
    config = fast_config("fast_refill", args.device, refill_rows=args.rows, refill_horizon=args.horizon)
    results, text = [], ""
    runs = [(int(e), int(d)) for e in args.check_every.split(",") for d in args.flag_lead.split(",")]
    default_divisor = fast_refill.FLAG_LEAD_DIVISOR
    for i, (every, divisor) in enumerate(runs):
        fast_refill.FLAG_LEAD_DIVISOR = divisor
        run, engine = fast_runner(model, prompt_ids, work, {**config, "refill_check_every": every}, end_at)
        run()  # warm-up: graph captures
        checks = engine.last_refill["steps"] // every
        trace = (checks // 2, args.trace_checks) if i == 0 and args.trace_checks else None
        clock = CheckClock(cuda, trace)
        restore = patched(clock)
        try:
            started = time.perf_counter()
            tokens = run()
            wall = time.perf_counter() - started
        finally:
            restore()
            clock.finish()
            fast_refill.FLAG_LEAD_DIVISOR = default_divisor
        row = {"check_every": every, "flag_lead": every // divisor, "useful_tok_s": round(tokens / wall),
               **engine.last_refill, **clock.summary(engine.last_refill["steps"], wall)}
        print(json.dumps(row), flush=True)
        results.append(row)
        if clock.prof is not None:
            text = profile_tables(clock.prof, args.top)
            print(text, flush=True)
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, "profile_refill.json").write_text(json.dumps({"args": vars(args), "env": environment(),
                                                                "runs": results}, indent=1))
        if text:  # no trace asked for (--trace-checks 0): no table
            Path(out, "profile_refill.txt").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
