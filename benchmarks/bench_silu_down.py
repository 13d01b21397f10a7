"""The decode step's MLP second half -- SiLU * up, then down_proj -- as the engine runs it today
(`fast_kernels.silu_mul`, then cuBLAS, which adds a split-K reduction kernel at these shapes)
against `fast_silu_down.silu_down` (one launch) over a grid of its launch shapes. Each layer of
the model shape has its own weight, replayed from one CUDA graph, so weights stream from memory
as in the engine, not from L2.

    python benchmarks/bench_silu_down.py [--shape 0.5b] [--rows 64,256] [--splits 1,2,4,8] [--block-n 32,64,128]
        [--block-k 64,128] [--stages 3] [--out FILE]
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHAPES, Row, graph_replay_us, median, out_path, print_table, save  # noqa: E402


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    from rlvr.rollout.fast_kernels import silu_mul
    from rlvr.rollout.fast_silu_down import SiluDownTiling, silu_down

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="0.5b", choices=sorted(SHAPES))
    ap.add_argument("--rows", default="64,256")
    ap.add_argument("--splits", default="1,2,4,8")
    ap.add_argument("--block-n", default="32,64,128")
    ap.add_argument("--block-k", default="64,128")
    ap.add_argument("--stages", default="3")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", default=out_path("bench_silu_down.json"))
    args = ap.parse_args()
    shape = SHAPES[args.shape]
    h, inter, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    weights = [torch.randn(h, inter, device="cuda", dtype=torch.bfloat16) * inter ** -0.5 for _ in range(layers)]
    all_rows = []
    for n in ints(args.rows):
        gate_up = torch.randn(n, 2 * inter, device="cuda", dtype=torch.bfloat16)
        gate, up = gate_up.chunk(2, dim=1)
        want = F.linear(silu_mul(gate, up), weights[0]).float()

        def timed(label: str, run, note: str = "") -> Row:
            us = [t / layers for t in graph_replay_us(run, calls=1, reps=args.reps)]
            gbs = h * inter * 2 / (median(us) * 1e-6) / 1e9
            return Row(label, median(us), "us", note=f"{n} rows, {gbs:,.0f} GB/s of weight{note}", samples=us)

        rows = [timed("silu_mul + F.linear (cuBLAS)", lambda: [F.linear(silu_mul(gate, up), w) for w in weights])]
        for splits, block_n, block_k, stages in itertools.product(ints(args.splits), ints(args.block_n),
                                                                  ints(args.block_k), ints(args.stages)):
            tiling = SiluDownTiling(block_m=64, block_n=block_n, block_k=block_k, splits=splits, num_stages=stages)
            try:
                err = (silu_down(gate, up, weights[0], tiling).float() - want).abs().max().item()
                rows.append(timed(f"silu_down splits={splits} block_n={block_n} block_k={block_k} stages={stages}",
                                  lambda: [silu_down(gate, up, w, tiling) for w in weights], f"; max diff {err:.1e}"))
            except Exception as e:  # a launch shape the GPU cannot run (shared memory): noted, not fatal
                print(f"splits={splits} block_n={block_n} block_k={block_k} stages={stages}: {type(e).__name__}: {e}")
        best = min(rows[1:], key=lambda r: r.value, default=None)
        print_table(f"SiLU * up + down_proj, {args.shape} ({h}x{inter}), {n} rows (us per layer, {layers} layers "
                    f"replayed); fastest: {best.name if best else '-'}", rows, baseline=rows[0].name)
        all_rows += rows
    save(args.out, f"SiLU * up + down_proj, {args.shape}", all_rows)


if __name__ == "__main__":
    main()
