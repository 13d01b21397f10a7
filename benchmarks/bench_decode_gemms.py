"""The decode step's GEMMs at one model shape and row count: each projection on cuBLAS (F.linear),
and o_proj / down_proj as the engine runs them with the residual add + RMSNorm that follows,
on cuBLAS against the split-K Triton GEMM (`fast_kernels.linear_partials`, whose partial sums the
add + RMSNorm adds up) over a grid of launch shapes.

Each measurement is a CUDA graph of 24 calls (a decode step's layers) replayed, so launch
latency counts as it does in the engine; reported as us per call and as the weight bytes read per
us (an H200's HBM reads at most about 4.8 TB/s).

    python benchmarks/bench_decode_gemms.py [--shape 0.5b] [--rows 64,256] [--parts 0,4,8,16]
        [--block-n 32,64,128] [--block-k 64,128,256] [--stages 3,4] [--out FILE]
    TRITON_INTERPRET=1 python benchmarks/bench_decode_gemms.py --device cpu --shape tiny --rows 4 ...
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHAPES, out_path, save  # noqa: E402
from benchmarks.tune_decode_attention import ints, time_us  # noqa: E402


def projections(shape: dict) -> dict[str, tuple[int, int]]:
    """name -> (out features, in features) of the decode step's GEMMs (q/k/v and gate/up stacked)."""
    h, i, heads, kv = (shape[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                                          "num_key_value_heads"))
    d = h // heads
    return {"qkv": ((heads + 2 * kv) * d, h), "o_proj": (h, h), "gate_up": (2 * i, h), "down_proj": (h, i),
            "lm_head": (shape["vocab_size"], h)}


def measure(args, shape: dict, rows: int, device: str, dtype) -> list[dict]:
    from rlvr.rollout import fast_kernels as K
    from rlvr.rollout.fast_split_k import SplitK, split_k_plan
    from rlvr.rollout.fast_split_kv import device_sm_count

    sms = device_sm_count(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    results = []
    for name, (n, k) in projections(shape).items():
        x = (torch.randn(rows, k, generator=g) / k ** 0.5).to(device, dtype)
        w = torch.randn(n, k, generator=g).to(device, dtype)
        weight_bytes = w.numel() * w.element_size()
        us = time_us(lambda: F.linear(x, w), device, args.reps)
        results.append({"rows": rows, "gemm": name, "what": "cuBLAS F.linear", "us": us,
                        "weight_gb_s": weight_bytes / us / 1e3})
        print(f"rows {rows} {name} ({n} x {k}): cuBLAS {us:.2f} us, {weight_bytes / us / 1e3:.0f} GB/s", flush=True)
        if name not in ("o_proj", "down_proj"):
            continue
        resid = torch.randn(rows, n, generator=g).to(device, dtype)
        norm_w = torch.ones(n, device=device, dtype=dtype)
        ref = F.linear(x, w).float()
        us = time_us(lambda: K.add_rmsnorm_(resid, F.linear(x, w), norm_w, 1e-6), device, args.reps)
        results.append({"rows": rows, "gemm": name, "what": "cuBLAS + add_rmsnorm_", "us": us})
        print(f"  cuBLAS + add_rmsnorm_: {us:.2f} us", flush=True)
        auto = split_k_plan(rows, n, k, sms)
        plans = [auto] + [SplitK(p or split_k_plan(rows, n, k, sms, bn, bk).parts, bn, bk, 4, st)
                          for p, bn, bk, st in itertools.product(ints(args.parts), ints(args.block_n),
                                                                 ints(args.block_k), ints(args.stages))]
        for plan in dict.fromkeys(plans):
            row = {"rows": rows, "gemm": name, "what": "split-K + add_rmsnorm_", "plan": dict(plan.__dict__),
                   "auto": plan == auto}
            try:
                err = (K.linear_partials(x, w, plan).sum(0) - ref).abs().max().item()
                row["us"] = time_us(lambda: K.add_rmsnorm_(resid, K.linear_partials(x, w, plan), norm_w, 1e-6),
                                    device, args.reps)
                row["max_err"] = err
            except Exception as e:  # a launch shape that does not build is a row with a reason
                row["failed"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            results.append(row)
            print(f"  split-K {plan}{' (auto)' if row['auto'] else ''}: "
                  + (f"{row['us']:.2f} us, err {row['max_err']:.1e}" if "us" in row else row["failed"]), flush=True)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="0.5b", choices=sorted(SHAPES))
    p.add_argument("--rows", default="64,256")
    p.add_argument("--parts", default="0,4,8,16", help="K chunks; 0: split_k_plan's count for the tile")
    p.add_argument("--block-n", default="32,64,128")
    p.add_argument("--block-k", default="64,128,256")
    p.add_argument("--stages", default="3,4")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a smoke run under TRITON_INTERPRET=1")
    p.add_argument("--out", default=out_path("bench_decode_gemms.json"))
    args = p.parse_args(argv)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    results = []
    for rows in ints(args.rows):
        results += measure(args, SHAPES[args.shape], rows, args.device, dtype)
    for rows in ints(args.rows):
        for gemm in ("o_proj", "down_proj"):
            base = next(r for r in results if r["rows"] == rows and r["gemm"] == gemm and r["what"].startswith("cuBLAS +"))
            split = [r for r in results if r["rows"] == rows and r["gemm"] == gemm and "us" in r
                     and r["what"].startswith("split-K")]
            best = min(split, key=lambda r: r["us"])
            auto = next(r for r in split if r["auto"])
            print(f"rows {rows} {gemm} + add_rmsnorm_: cuBLAS {base['us']:.2f} us, split-K auto {auto['us']:.2f}, "
                  f"best {best['us']:.2f} ({best['plan']})")
    save(args.out, f"decode GEMMs, {args.shape}", [], {"shape": args.shape, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
