"""A/B of the fused Triton loss: this tree's `rlvr.kernels.triton_loss` against another version of
that file (e.g. an older commit's), in one process, rounds interleaved, so machine-to-machine and
run-to-run spread cancel. Shape and loss as bench_loss.py (B=64, T=512, H=896, V=151936, grpo,
beta 0.04, old and ref log-probs given).

    git show REV:rlvr/kernels/triton_loss.py > /tmp/old_triton_loss.py
    python benchmarks/ab_fused_loss.py --old /tmp/old_triton_loss.py [--rounds 6 --reps 3]
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_loss import fused_step, make_inputs  # noqa: E402
from benchmarks.common import cuda_time_ms, median  # noqa: E402


def load_module(path: str):
    spec = importlib.util.spec_from_file_location("other_triton_loss", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, help="path of the other triton_loss.py")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    from rlvr.kernels import triton_loss

    inputs = make_inputs(64, 512, 896, 151936)
    hidden, weight = inputs[0], inputs[1]
    versions = {"this tree": triton_loss, f"other ({args.old})": load_module(args.old)}
    times: dict[str, list[float]] = {name: [] for name in versions}
    for _ in range(args.rounds):
        for name, module in versions.items():
            step = fused_step(module, None)

            def call():
                hidden.grad = weight.grad = None
                step(*inputs)

            times[name] += cuda_time_ms(call, warmup=1, reps=args.reps)
    base = median(times[f"other ({args.old})"])
    print("| version | median ms | min ms | vs other |\n|---|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {median(ts):.1f} | {min(ts):.1f} | {base / median(ts):.3f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
