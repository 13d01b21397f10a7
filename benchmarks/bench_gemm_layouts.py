"""The decode step's projections at rollout row counts, with the weight in the model's layout
(nn.Linear's (out, in): `F.linear`) against a transposed copy ((in, out) contiguous: `x @ w_t`),
which makes cuBLAS pick other kernels for the same product. One projection per layer of the model
shape is replayed from a CUDA graph (each layer its own weight, so the weights stream from memory as
in the engine, not from L2).

    python benchmarks/bench_gemm_layouts.py [--shape 0.5b] [--rows 64,256] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHAPES, Row, graph_replay_us, median, out_path, print_table, save  # noqa: E402


def projections(shape: dict) -> dict[str, tuple[int, int]]:
    """name -> (out, in) of the decode step's projections (q/k/v and gate/up stacked, as the engine runs them)."""
    h, i = shape["hidden_size"], shape["intermediate_size"]
    d = h // shape["num_attention_heads"]
    return {"qkv": (h + 2 * shape["num_key_value_heads"] * d, h), "o_proj": (h, h), "gate_up": (2 * i, h),
            "down_proj": (h, i)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="0.5b", choices=sorted(SHAPES))
    ap.add_argument("--rows", default="64,256")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=out_path("bench_gemm_layouts.json"))
    args = ap.parse_args()
    shape = SHAPES[args.shape]
    layers = shape["num_hidden_layers"]
    all_rows = []
    for n in [int(x) for x in args.rows.split(",")]:
        for name, (out_f, in_f) in projections(shape).items():
            rows = []
            weights = [torch.randn(out_f, in_f, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(layers)]
            transposed = [w.t().contiguous() for w in weights]
            x = torch.randn(n, in_f, device="cuda", dtype=torch.bfloat16)
            err = (F.linear(x, weights[0]).float() - (x @ transposed[0]).float()).abs().max().item()
            for label, run in (("F.linear, weight (out, in)", lambda: [F.linear(x, w) for w in weights]),
                               ("x @ w_t, weight (in, out)", lambda: [x @ w for w in transposed])):
                us = [t / layers for t in graph_replay_us(run, calls=1, reps=args.reps)]
                gbs = out_f * in_f * 2 / (median(us) * 1e-6) / 1e9
                rows.append(Row(f"{name}: {label}", median(us), "us",
                                note=f"{n} rows, {out_f}x{in_f}, {gbs:,.0f} GB/s of weight; max diff {err:.1e}",
                                samples=us))
            del weights, transposed
            print_table(f"{name}, {args.shape}, {n} rows (us per launch, {layers} layers replayed)", rows,
                        baseline=rows[0].name)
            all_rows += rows
    save(args.out, f"GEMM layouts, {args.shape}", all_rows)


if __name__ == "__main__":
    main()
