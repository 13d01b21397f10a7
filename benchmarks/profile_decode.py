"""Where the fast engine's decode step spends its time: per decode step, the CUDA-graph replay
time, the sum of kernel times (the difference is launch gaps inside the graph) and the kernels
grouped by name, for each decode path. Same model and sizes as bench_rollout.py.

    python benchmarks/profile_decode.py [--shape 0.5b] [--sizes 64,256] [--paths gemm,pointwise,pointwise_nosplit]
        [--top 12] [--prompt-len 128] [--new-tokens 256] [--column 200]

Kernel times come from torch.profiler over eager (un-captured) steps, which run the same kernels
as the graph; replay time is CUDA events over graph replays.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_rollout import IdTokenizer, prompts  # noqa: E402
from benchmarks.common import SHAPES, build_model  # noqa: E402

GROUP, PROMPT_LEN = 8, 128

PATHS = {"gemm": dict(kernels="triton", fuse_gemms=True), "pointwise": dict(kernels="triton", fuse_gemms=False),
         "pointwise_nosplit": dict(kernels="triton", fuse_gemms=False, split_kv=False),
         "torch": dict(kernels="torch")}
COLUMN = 200
"""The cache column the profiled steps write (set by --column): attention reads every column before it."""


def rewind(st) -> None:
    """Back to output column 1 at cache column COLUMN (mid-rollout), so the steps below stay in bounds."""
    st.step.fill_(1)
    st.col.fill_(COLUMN)


def replay_ms(st, reps: int = 50) -> float:
    rewind(st)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    st.graph.replay()
    start.record()
    for _ in range(reps):
        st.graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def kernel_table(engine, st, params, steps: int = 10) -> tuple[float, dict[str, tuple[float, int]]]:
    """Sum of kernel time per step (ms) and {kernel name: (ms per step, launches per step)}."""
    from torch.profiler import ProfilerActivity, profile

    rewind(st)
    engine._step(st, params)  # warm
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            engine._step(st, params)
        torch.cuda.synchronize()
    per_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            per_name[evt.name][0] += evt.device_time / 1000 / steps
            per_name[evt.name][1] += 1 / steps
    total = sum(v[0] for v in per_name.values())
    return total, {k: (v[0], round(v[1])) for k, v in per_name.items()}


def main(argv=None) -> int:
    global COLUMN  # rewind() reads it
    from rlvr.rollout.base import SamplingParams
    from rlvr.rollout.fast import FastEngine, FastEngineConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="0.5b", choices=sorted(SHAPES))
    p.add_argument("--sizes", default="64,256")
    p.add_argument("--paths", default="gemm,pointwise")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--prompt-len", type=int, default=PROMPT_LEN)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--column", type=int, default=COLUMN,
                   help="cache column of the profiled steps (< prompt-len + new-tokens - 60)")
    args = p.parse_args(argv)
    COLUMN = args.column
    model = build_model(args.shape, "cuda", eos_token_id=None).eval()
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0)
    for n in (int(s) for s in args.sizes.split(",")):
        for path in args.paths.split(","):
            engine = FastEngine(model, IdTokenizer(), FastEngineConfig(**PATHS[path]))
            prompt_ids = prompts(n // GROUP, args.prompt_len, SHAPES[args.shape]["vocab_size"], seed=n)
            engine.generate(prompt_ids, GROUP, params)  # captures the graph
            st = next(iter(engine._states.values()))
            graph_ms = replay_ms(st)
            total, table = kernel_table(engine, st, params)
            launches = sum(c for _, c in table.values())
            print(f"\n## {args.shape}, N={n} prompt {args.prompt_len} + {args.new_tokens}, column {COLUMN}, path={path} "
                  f"(fused_gemms={engine.fused_gemms}): graph replay {graph_ms:.3f} ms/step, "
                  f"kernels {total:.3f} ms/step in {launches} launches, gaps {graph_ms - total:.3f} ms")
            print("| kernel | ms/step | launches/step |\n|---|---|---|")
            for name, (ms, count) in sorted(table.items(), key=lambda kv: -kv[1][0])[: args.top]:
                print(f"| {name[:90]} | {ms:.3f} | {count} |")
            del engine, st
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
