"""Decode attention launch parameters (`fast_kernels.AttentionTiling`) and split-KV program counts,
measured against each other on the shapes of a long generation; then, with --rollout, the
fastest against the default end to end (the fast engine's whole generation, same model and prompts).

Per cache column in --columns (the attention reads columns 0..col of every sequence), N sequences,
a model shape's heads: each (tiling, programs per SM) is timed with CUDA events over one layer's
launches (the split kernel and the combine, replayed from a CUDA graph as in the engine), checked
against the default's output, and reported as
us and as GB/s of K/V read (an H200's HBM reads at most about 4.8 TB/s). The fastest is the one
with the least time summed over the columns.

    python benchmarks/tune_decode_attention.py [--shape 0.5b] [--n 64] [--columns 1024,2560,4096]
        [--cache 4608] [--block-s 64,128] [--warps 4,8] [--stages 0,2,3,4] [--programs-per-sm 2,4,8]
        [--splits 1,2,4] [--rollout --prompt-len 512 --new-tokens 4096] [--out FILE]
    TRITON_INTERPRET=1 python benchmarks/tune_decode_attention.py --device cpu --n 2 --columns 300 \\
        --cache 320 ...      # a smoke run of every option on the CPU (the Triton interpreter)
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (SHAPES, Row, graph_replay_us, host_time_s, median, out_path, print_table,  # noqa: E402
                               save)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def inputs(n: int, kv: int, heads: int, d: int, cache: int, device: str, dtype):
    g = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(n, heads, d, generator=g).to(device, dtype)
    k = torch.randn(n, kv, cache, d, generator=g).to(device, dtype)
    v = torch.randn(n, kv, cache, d, generator=g).to(device, dtype)
    return q, k, v, torch.zeros(n, dtype=torch.long, device=device)


GRAPH_CALLS = 24
"""Calls captured in one CUDA graph (a decode step's layers): eager launches from Python take longer
than the kernels, so only a replayed graph times the GPU's work, as the engine runs it."""


def time_us(fn, device: str, reps: int) -> float:
    """Median time of one call in microseconds: a CUDA graph of GRAPH_CALLS calls replayed `reps`
    times (host time of one eager call in a smoke run)."""
    if device != "cuda":
        return median(host_time_s(fn, reps=1)) * 1e6
    return median(graph_replay_us(fn, GRAPH_CALLS, reps))


def sweep(args, shape: dict, device: str, dtype) -> tuple[list[dict], dict]:
    """Every (tiling, split count) at every column: rows of us / GB/s; and the fastest. Split
    counts come from --programs-per-sm through the engine's rule, or from --splits as given."""
    from rlvr.rollout import fast_kernels as K
    from rlvr.rollout.fast_split_kv import PROGRAMS_PER_SM, attention_splits, device_sm_count

    heads, kv = shape["num_attention_heads"], shape["num_key_value_heads"]
    d = shape["hidden_size"] // heads
    q, k, v, start = inputs(args.n, kv, heads, d, args.cache, device, dtype)
    sms = device_sm_count(device)
    rule = attention_splits(args.n, kv, args.cache, sms)
    default = (K.ATTENTION_TILING, PROGRAMS_PER_SM, rule)
    counts = ([(None, s) for s in ints(args.splits)] if args.splits else
              [(p, attention_splits(args.n, kv, args.cache, sms, p)) for p in ints(args.programs_per_sm)])
    configs = [default] + [(K.AttentionTiling(b, w, s or None), p, c) for b, w, s, (p, c) in
                           itertools.product(ints(args.block_s), ints(args.warps), ints(args.stages), counts)]
    configs = list(dict.fromkeys(configs))  # the default may be in the grid too
    results = []
    for tiling, per_sm, splits in configs:
        row = {"block_s": tiling.block_s, "num_warps": tiling.num_warps, "num_stages": tiling.num_stages,
               "programs_per_sm": per_sm, "splits": splits, "us": {}, "gb_s": {}, "max_err": 0.0}
        if (tiling, per_sm, splits) == default:
            row["default"] = True
        try:
            measure_columns(args, row, q, k, v, start, splits, tiling, d, device)
        except Exception as e:  # a tiling that does not build (shared memory, ...) is a row with a reason
            row["failed"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            print(f"{label(tiling, per_sm, splits)}: failed: {row['failed']}", flush=True)
            results.append(row)
            continue
        row["total_us"] = sum(row["us"].values())
        results.append(row)
        print(f"{label(tiling, per_sm, splits)}: " + ", ".join(
            f"col {c} {row['us'][c]:.1f} us {row['gb_s'][c]:.0f} GB/s" for c in row["us"])
            + f"  err {row['max_err']:.1e}", flush=True)
    ok = [r for r in results if "failed" not in r and r["max_err"] <= (1e-4 if dtype == torch.float32 else 3e-2)]
    best = min(ok, key=lambda r: r["total_us"])
    return results, best


def label(tiling, per_sm, splits=None) -> str:
    parts = [f"block_s {tiling.block_s}", f"warps {tiling.num_warps}", f"stages {tiling.num_stages}"]
    parts += [f"{per_sm} programs/SM"] if per_sm else []
    return ", ".join(parts + ([f"{splits} splits"] if splits else []))


def measure_columns(args, row: dict, q, k, v, start, splits: int, tiling, d: int, device: str) -> None:
    """Time and check one (tiling, split count) at every column of --columns, into `row`."""
    from rlvr.rollout import fast_kernels as K

    kv = k.shape[1]
    for col in ints(args.columns):
        col_t = torch.tensor([col], device=device)
        run = lambda: K.decode_attention(q, k, v, start, col_t, d ** -0.5, splits, tiling)  # noqa: E731
        ref = K.decode_attention(q, k, v, start, col_t, d ** -0.5, None, K.ATTENTION_TILING)
        row["max_err"] = max(row["max_err"], (run().float() - ref.float()).abs().max().item())
        us = time_us(run, device, args.reps)
        kv_bytes = args.n * kv * (col + 1) * d * 2 * k.element_size()  # K and V, columns 0..col
        row["us"][col], row["gb_s"][col] = us, kv_bytes / us / 1e3


def rollout_rows(args, best: dict) -> list[Row]:
    """The fast engine's generation with the default launch parameters, then with `best`."""
    from benchmarks.bench_rollout import Workload, build_model, fast_config, measure, prompts
    from benchmarks.bench_rollout import fast_runner
    from rlvr.rollout import fast_kernels as K
    from rlvr.rollout import fast_split_kv

    model = build_model(args.shape, args.device, eos_token_id=None).eval()
    work = Workload(args.prompt_len, args.new_tokens, args.group, args.device)
    prompt_ids = prompts(args.n // args.group, args.prompt_len, SHAPES[args.shape]["vocab_size"], seed=args.n)
    rows = []
    default_tiling, default_per_sm = K.ATTENTION_TILING, fast_split_kv.PROGRAMS_PER_SM
    chosen = K.AttentionTiling(best["block_s"], best["num_warps"], best["num_stages"])
    for name, tiling, per_sm in (("default", default_tiling, default_per_sm),
                                 ("tuned", chosen, best["programs_per_sm"])):
        K.ATTENTION_TILING, fast_split_kv.PROGRAMS_PER_SM = tiling, per_sm  # read when the graphs are captured
        try:
            run, _ = fast_runner(model, prompt_ids, work, fast_config("fast", args.device))
            row = measure(f"fast engine, {name} ({label(tiling, per_sm)})", run,
                          args.n * args.new_tokens, reps=args.rollout_reps)
        finally:
            K.ATTENTION_TILING, fast_split_kv.PROGRAMS_PER_SM = default_tiling, default_per_sm
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="0.5b", choices=sorted(SHAPES))
    p.add_argument("--n", type=int, default=64, help="sequences")
    p.add_argument("--columns", default="1024,2560,4096", help="current cache columns to time")
    p.add_argument("--cache", type=int, default=4608, help="cache length S (the engine's: prompt + new tokens)")
    p.add_argument("--block-s", default="32,64,128")
    p.add_argument("--warps", default="2,4,8")
    p.add_argument("--stages", default="0,2,3,4", help="num_stages; 0: Triton's default")
    p.add_argument("--programs-per-sm", default="2,4,8", help="split-KV programs aimed at per SM")
    p.add_argument("--splits", default="",
                   help="split counts to time as given (short caches, where the engine's rule keeps 1), "
                        "instead of --programs-per-sm; not with --rollout")
    p.add_argument("--reps", type=int, default=20, help="graph replays per measurement")
    p.add_argument("--rollout", action="store_true", help="then the default and the fastest, end to end")
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=4096)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--rollout-reps", type=int, default=1)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a smoke run under TRITON_INTERPRET=1")
    p.add_argument("--out", default=out_path("tune_decode_attention.json"))
    args = p.parse_args(argv)
    if args.splits and args.rollout:
        p.error("--rollout takes its split counts from --programs-per-sm, not --splits")
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    results, best = sweep(args, SHAPES[args.shape], args.device, dtype)
    default = next(r for r in results if r.get("default"))
    print(f"\nfastest: block_s {best['block_s']}, warps {best['num_warps']}, stages {best['num_stages']}, "
          f"programs/SM {best['programs_per_sm']}, splits {best['splits']}: {best['total_us']:.1f} us over the "
          f"columns against the default's {default['total_us']:.1f} ({default['total_us'] / best['total_us']:.2f}x)")
    rows = rollout_rows(args, best) if args.rollout else []
    if rows:
        print_table(f"rollout, {args.shape}, N={args.n}, prompt {args.prompt_len} + {args.new_tokens} new",
                    rows, baseline=rows[0].name)
    save(args.out, "decode attention tiling", rows,
         {"sweep": results, "best": best, "shape": args.shape, "n": args.n, "cache": args.cache})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
