"""The decode step's layers with the projections on cuBLAS against the Triton GEMMs of
`rlvr.rollout.fast_pdl_gemm`, without and with programmatic dependent launch and the weight
prefetch; optionally a sweep of each projection's launch shape.

Every layer of the model shape runs as the engine runs it (add + RMSNorm, q/k/v, RoPE + cache
write + attention at cache column --column, o_proj, add + RMSNorm, gate/up, SiLU * up, down_proj),
each layer with its own random weights so they stream from HBM, replayed from one CUDA graph. The
lm_head and the sampler are left out: they are the same on both paths.

    python benchmarks/bench_pdl_gemms.py [--shape 0.5b] [--rows 64,256] [--column 200] [--sweep] [--out FILE]

Paths: cublas (the engine's default: F.linear on stacked weights, silu_mul), triton (the Triton
GEMMs, plain launches), triton_pdl (PDL, no prefetch), triton_pdl_prefetch (what
`FastEngineConfig.pdl_gemms` runs). --sweep: for each projection, the chain with that projection's
launch shape varied (the others at `default_tiling`), on the last path.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_gemm_layouts import projections  # noqa: E402
from benchmarks.common import SHAPES, Row, graph_replay_us, median, out_path, print_table, save  # noqa: E402

PATHS = {"cublas": None, "triton": dict(pdl=False, prefetch=False), "triton_pdl": dict(pdl=True, prefetch=False),
         "triton_pdl_prefetch": dict(pdl=True, prefetch=True)}
PROJECTIONS = ("qkv", "o_proj", "gate_up", "down_proj")
DEVICE, DTYPE = "cuda", torch.bfloat16  # "cpu", float32 with TRITON_INTERPRET=1: a smoke run (no timing, no PDL)


def layer_tensors(shape: dict, n: int, length: int) -> list[dict]:
    """Per layer: stacked q/k/v weight and bias, o, stacked gate/up, down, the two norm weights, a
    K/V cache (n, kv, length, D) of random columns."""
    h, kv = shape["hidden_size"], shape["num_key_value_heads"]
    d = h // shape["num_attention_heads"]
    sizes = projections(shape)  # name -> (out, in) of the stacked weights

    def weight(out_f, in_f):
        return torch.randn(out_f, in_f, device=DEVICE, dtype=DTYPE) / in_f ** 0.5

    return [dict(**{name: weight(*sizes[name]) for name in PROJECTIONS},
                 qkv_bias=torch.randn(sizes["qkv"][0], device=DEVICE, dtype=DTYPE) * 0.1,
                 norm1=torch.ones(h, device=DEVICE, dtype=DTYPE),
                 norm2=torch.ones(h, device=DEVICE, dtype=DTYPE),
                 k=torch.randn(n, kv, length, d, device=DEVICE, dtype=DTYPE),
                 v=torch.randn(n, kv, length, d, device=DEVICE, dtype=DTYPE))
            for _ in range(shape["num_hidden_layers"])]


def make_chain(shape: dict, layers: list[dict], n: int, column: int, path: str, tilings: dict | None = None):
    """A function running every layer once on `path`; returns the residual stream (n, H)."""
    from rlvr.rollout import fast_kernels as K
    from rlvr.rollout import fast_pdl_gemm as G

    h, heads, kv = shape["hidden_size"], shape["num_attention_heads"], shape["num_key_value_heads"]
    d = h // heads
    split = [h, kv * d, kv * d]
    x0 = torch.randn(n, h, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(0)).to(DTYPE)  # every path
    cos, sin = torch.ones(n, d, device=DEVICE, dtype=DTYPE), torch.zeros(n, d, device=DEVICE,
                                                                                   dtype=DTYPE)
    start = torch.zeros(n, dtype=torch.long, device=DEVICE)
    col = torch.tensor([column], device=DEVICE)
    opts = PATHS[path]
    pdl = bool(opts and opts["pdl"])
    tilings = tilings or {}

    def gemm(name, inp, w, bias=None):
        if opts is None:
            return F.linear(inp, w, bias)
        if name == "gate_up":
            return G.gate_up_silu(inp, w, tiling=tilings.get(name), **opts)
        return G.linear(inp, w, bias, tiling=tilings.get(name), **opts)

    def chain():
        x = x0.clone()
        delta = None
        for t in layers:
            hn = K.add_rmsnorm_(x, delta, t["norm1"], 1e-6, pdl)
            q, k, v = gemm("qkv", hn, t["qkv"], t["qkv_bias"]).split(split, dim=1)
            out = K.rope_cache_attention_(q, k, v, cos, sin, t["k"], t["v"], start, col, d ** -0.5, pdl=pdl)
            hn = K.add_rmsnorm_(x, gemm("o_proj", out, t["o_proj"]), t["norm2"], 1e-6, pdl)
            act = gemm("gate_up", hn, t["gate_up"])
            if opts is None:
                act = K.silu_mul(*act.chunk(2, dim=1))
            delta = gemm("down_proj", act, t["down_proj"])
        return x + delta

    return chain


def time_chain(chain, layers: int, reps: int) -> list[float]:
    """Microseconds per layer of one replay of the whole chain."""
    return [t / layers for t in graph_replay_us(chain, calls=1, reps=reps)]


def sweep_tilings(m: int) -> list:
    """Column tiles, K splits and reduction steps at the default row tile, warps and stages; the
    default's neighbours in warps and stages; and 256-column reduction steps. With about one program
    per SM, a program's pipeline (stages x block_n x block_k weight elements) is what one SM has in
    flight from memory, so the deeper pipelines come first."""
    from rlvr.rollout.fast_pdl_gemm import GemmTiling

    block_m = min(64, max(16, 1 << (m - 1).bit_length()))
    deep = [GemmTiling(block_m, 32, 256, splits, 4, stages) for splits in (1, 2, 4) for stages in (2, 3)]
    deep += [GemmTiling(block_m, 32, 128, splits, warps, stages) for splits in (1, 4)
             for warps, stages in ((4, 4), (8, 3), (8, 4))]
    grid = [GemmTiling(block_m, bn, bk, splits) for bn, bk, splits
            in itertools.product((16, 32, 64), (64, 128), (1, 2, 4, 8))]
    return deep + grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="0.5b", choices=sorted(SHAPES))
    ap.add_argument("--rows", default="64,256")
    ap.add_argument("--column", type=int, default=200)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--out", default=out_path("bench_pdl_gemms.json"))
    args = ap.parse_args()
    shape = SHAPES[args.shape]
    n_layers = shape["num_hidden_layers"]
    all_rows = []
    for n in [int(r) for r in args.rows.split(",")]:
        layers = layer_tensors(shape, n, args.column + 64)
        outputs, rows = {}, []
        for path in PATHS:
            chain = make_chain(shape, layers, n, args.column, path)
            outputs[path] = chain()
            us = time_chain(chain, n_layers, args.reps)
            rows.append(Row(f"{path}", median(us), "us", note=f"{n} rows, column {args.column}, per layer",
                            samples=us))
        ref = outputs["cublas"].float()
        for row in rows:
            out = outputs[row.name]
            row.note += (f"; max |diff| vs cublas {(out.float() - ref).abs().max().item():.2e}"
                         f"; bit-equal to triton: {torch.equal(out, outputs['triton'])}")
        print_table(f"{args.shape}, {n} rows: one decode layer (us, {n_layers} layers replayed)", rows,
                    baseline="cublas")
        all_rows += rows
        save(args.out, f"PDL GEMMs, {args.shape}", all_rows)
        if args.sweep:
            for found in sweep(shape, layers, n, args, rows[-1]):
                all_rows += found
                save(args.out, f"PDL GEMMs, {args.shape}", all_rows)  # a timeout keeps what was swept
        del layers


def sweep(shape, layers, n, args, default_row: Row):
    """Each projection's launch shapes in the full chain (others at the default), a projection's rows
    at a time, best first; prints the best five of each."""
    n_layers = shape["num_hidden_layers"]
    for name in PROJECTIONS:
        found = []
        for tiling in sweep_tilings(n):
            chain = make_chain(shape, layers, n, args.column, "triton_pdl_prefetch", {name: tiling})
            try:
                us = time_chain(chain, n_layers, max(5, args.reps // 2))
            except Exception as e:  # noqa: BLE001 -- a launch shape past the GPU's shared memory
                print(f"{name} {tiling}: {type(e).__name__}")
                continue
            found.append(Row(f"sweep {name}: {tiling}", median(us), "us", note=f"{n} rows", samples=us))
        found.sort(key=lambda r: r.value)
        if not found:
            continue
        print_table(f"{args.shape}, {n} rows: {name} launch shapes (best 5 of {len(found)}; default "
                    f"{default_row.value:.2f} us)", found[:5], baseline=found[0].name)
        yield found


if __name__ == "__main__":
    main()
