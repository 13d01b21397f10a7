"""Rollout throughput: transformers `generate` (dynamic cache; static cache + torch.compile) against
rlvr's fast engine (fused Triton or torch decode kernels, each in a CUDA graph, with or
without torch.compile), on the same model and prompts.

Model: `--shape` (0.5b = Qwen2-0.5B: hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocab
151936; 1.5b = Qwen2.5-1.5B; 7b = Qwen2.5-7B), random weights, bf16. Workload: N sequences = N/G
prompts x G samples, prompt `--prompt-len` tokens, temperature 1 with no top-k/top-p.
- fixed: no EOS, every sequence runs `--new-tokens` tokens. tok/s = new tokens / wall time of
  the whole generate call (median of reps, after a warm-up call of the same shape: compilation
  and graph capture are not timed).
- variable (fast engines only; the peers are measured on fixed lengths only): each sequence's
  completion ends with an EOS forced at its own length (`FastEngine.generate(end_at=...)`), drawn
  from a lognormal (median a quarter of the cap, sigma `--sigma`, seeded; capped at
  `--new-tokens`). useful tok/s = tokens up to each sequence's end / wall time; reported with its
  ratio to the same engine's fixed-length tok/s at the same N.

    python benchmarks/bench_rollout.py [--shape 0.5b] [--sizes 256,64] [--prompt-len 128] [--new-tokens 256]
        [--workload fixed|variable|both] [--engines hf,hf_static,fast,fast_compiled] [--out FILE]
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (SHAPES, Row, build_model, host_time_s, median, out_path, print_table,  # noqa: E402
                               save, shape_label)

ENGINES = ("fast", "fast_refill", "fast_nocompact", "fast_nosplit", "fast_gemm", "fast_compiled",
           "fast_lora", "fast_lora_merged", "fast_torch", "fast_torch_compiled", "hf_static", "hf")
"""fast: the default (triton kernels around cuBLAS GEMMs, finished rows compacted away, split-KV
attention on long caches); fast_refill (variable workload only): N rows decoding --refill-factor x N
sequences, each finished prompt group's rows refilled with a waiting prompt
(FastEngineConfig.refill_rows = N), its useful tok/s against fast's fixed-length figure at N; fast_nocompact: FastEngineConfig.compact=False; fast_nosplit:
FastEngineConfig.split_kv=False; fast_gemm: with the norm-fused Triton GEMMs
(FastEngineConfig.fuse_gemms=True); fast_lora / fast_lora_merged: a copy of the model with rlvr's
default LoRA adapters (r=16 on every projection), generated from as GRPO does: through peft's adapters
(engine merge_lora=False) or from the merged copy (the default);
fast_torch: torch ops; *_compiled: + torch.compile."""
EOS = 1  # the variable workload's EOS id (the prompts never contain it)


@dataclass
class Workload:
    prompt_len: int
    new_tokens: int
    group: int
    device: str


class IdTokenizer:
    """The few tokenizer members the engines use; text is the ids joined (no vocabulary needed)."""

    eos_token_id = None  # no EOS: every sequence generates all its new tokens
    pad_token_id = 0

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


class EosTokenizer(IdTokenizer):
    eos_token_id = EOS


def prompts(n_prompts: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, vocab - 10, (n_prompts, length), generator=g).tolist()


def end_lengths(n: int, cap: int, sigma: float, seed: int) -> list[int]:
    """Per sequence, the completion length at which EOS is forced: lognormal, median cap / 4."""
    g = torch.Generator().manual_seed(seed)
    draws = torch.randn(n, generator=g, dtype=torch.float64) * sigma + math.log(cap / 4)
    return [min(cap, max(1, round(x))) for x in draws.exp().tolist()]


def hf_runner(model, prompt_ids, work: Workload, static: bool):
    from transformers import GenerationConfig

    rows = [p for p in prompt_ids for _ in range(work.group)]  # the same N sequences as the fast engine
    ids = torch.tensor(rows, device=work.device)
    mask = torch.ones_like(ids)
    extra = {"cache_implementation": "static"} if static else {}
    cfg = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=work.new_tokens,
                           min_new_tokens=work.new_tokens, pad_token_id=0, eos_token_id=None, **extra)

    def run() -> int:
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)
        return (out.shape[1] - ids.shape[1]) * out.shape[0]
    return run


def fast_runner(model, prompt_ids, work: Workload, config: dict, end_at: list[int] | None = None):
    from rlvr.rollout.base import SamplingParams
    from rlvr.rollout.fast import FastEngine, FastEngineConfig

    tokenizer = IdTokenizer() if end_at is None else EosTokenizer()
    engine = FastEngine(model, tokenizer, FastEngineConfig(**config))
    params = SamplingParams(max_new_tokens=work.new_tokens, temperature=1.0)

    def run() -> int:
        out = engine.generate(prompt_ids, work.group, params, end_at=end_at)
        return sum(out.lengths)
    return run, engine


def fast_config(name: str, device: str, **refill) -> dict:
    """FastEngineConfig options of a fast engine name (the CPU smoke run has only torch ops);
    `refill` (refill_rows, refill_horizon) applies to fast_refill only."""
    kernels = "torch" if "torch" in name or device != "cuda" else "triton"
    return dict(compile="compiled" in name, kernels=kernels, fuse_gemms=name == "fast_gemm",
                compact=name != "fast_nocompact", split_kv=name != "fast_nosplit",
                **(refill if name == "fast_refill" else {}))


def fast_label(engine) -> str:
    """What the engine ran after capture (a failed Triton build falls back with a warning)."""
    kernels = ("triton kernels + fused GEMMs" if engine.fused_gemms else
               "triton kernels" if engine.fused else "torch ops")
    graph = ", CUDA graph" if engine.model.device.type == "cuda" and engine.config.cuda_graph else ""
    extra = ((" + compile" if engine.config.compile else "") + ("" if engine.config.compact else ", no compaction")
             + ("" if engine.config.split_kv else ", no split-KV")
             + (f", refill into {engine.config.refill_rows} rows" if engine.config.refill_rows else ""))
    return f"rlvr fast ({kernels}{graph}{extra})"


def empty_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure(name: str, run, expected: int, reps: int, warmup: bool = True) -> Row:
    """tok/s of `run` (which returns the tokens it generated); `expected` tokens per call."""
    try:
        if warmup:
            run()
        counts = []
        times = host_time_s(lambda: counts.append(run()), reps)
    except Exception as e:  # a peer that fails is a row with a reason, not a crash of the benchmark
        empty_cache()
        return Row(name, None, "tok/s", note=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}")
    note = "" if all(c == expected for c in counts) else f"generated {counts}, expected {expected}"
    tok_s = [c / t for c, t in zip(counts, times)]
    row = Row(name, median(tok_s), "tok/s", note=note, samples=tok_s)
    print(f"{name}: {row.value:,.0f} tok/s  ({[round(t, 3) for t in times]} s) {note}", flush=True)
    empty_cache()
    return row


def measure_peer(name: str, model, prompt_ids, work: Workload, n: int, reps: int) -> Row:
    if name == "hf":  # about 16 s a call at N=256: one timed call, no warm-up
        run = hf_runner(model, prompt_ids, work, static=False)
        return measure("hf generate (dynamic cache)", run, n * work.new_tokens, reps=1, warmup=False)
    run = hf_runner(model, prompt_ids, work, static=True)
    return measure("hf generate (static cache, compiled)", run, n * work.new_tokens, reps=reps)


def lora_generation_model(model, merged: bool):
    """What GRPO's engine reads for `model` (deep-copied) under rlvr's default LoRA: the peft copy
    with bfloat16 adapters around the shared base, or the merged plain copy. The adapters are moved
    off peft's zero B so that the adapted path computes something."""
    import copy

    from rlvr.models.config import LoraSettings, ModelConfig
    from rlvr.models.loading import apply_lora
    from rlvr.models.generation_weights import GenerationWeights

    policy = apply_lora(copy.deepcopy(model), ModelConfig(lora=LoraSettings()))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1e-3)
    return GenerationWeights(policy, next(model.parameters()).dtype, merge_lora=merged).model


def measure_fast(name: str, model, prompt_ids, work: Workload, n: int, reps: int, end_at=None, **refill) -> Row:
    lora = name.startswith("fast_lora")
    if lora:
        model = lora_generation_model(model, merged=name == "fast_lora_merged")
    run, engine = fast_runner(model, prompt_ids, work, fast_config(name, work.device, **refill), end_at)
    expected = n * work.new_tokens if end_at is None else sum(end_at)
    row = measure(name, run, expected, reps)
    row.name = fast_label(engine) + ("" if end_at is None else ", variable lengths (useful tok/s)")
    if lora:
        row.name += ", LoRA r=16 merged" if name == "fast_lora_merged" else ", LoRA r=16 through peft"
    if engine.last_refill:
        row.note = "; ".join(filter(None, [f"{engine.last_refill}", row.note]))
    return row


def variable_row(fixed: Row, variable: Row, end_at: list[int]) -> Row:
    """The variable-length row, its note saying the length distribution and the ratio to fixed."""
    ratio = f"{variable.value / fixed.value:.2f}x fixed" if variable.value and fixed.value else "ratio -"
    lengths = sorted(end_at)
    spread = (f"lengths median {lengths[len(lengths) // 2]}, mean {sum(lengths) / len(lengths):.0f}, "
              f"max {lengths[-1]}")
    variable.note = "; ".join(filter(None, [ratio, spread, variable.note]))
    return variable


def refill_row(model, work: Workload, n: int, args, fixed: Row | None) -> Row:
    """Variable lengths on N rows refilled from --refill-factor x N sequences: useful tok/s, its
    ratio to the fast engine's fixed-length tok/s at N (measure `fast` first in the same run)."""
    total = n * args.refill_factor
    vocab = SHAPES[args.shape]["vocab_size"]
    end_at = end_lengths(total, args.new_tokens, args.sigma, seed=total)
    row = measure_fast("fast_refill", model, prompts(total // args.group, args.prompt_len, vocab, seed=total), work,
                       total, args.reps, end_at, refill_rows=n, refill_horizon=args.refill_horizon)
    row.name += f", {total} sequences, horizon {args.refill_horizon}"
    return variable_row(fixed or Row("", None, "tok/s"), row, end_at)


def main(argv=None) -> int:
    from rlvr.rollout.engine_config import FastEngineConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="0.5b", choices=sorted(SHAPES))
    p.add_argument("--sizes", default="256,64", help="sequence counts N (multiples of --group)")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=256, help="completion length (the cap, when variable)")
    p.add_argument("--group", type=int, default=8, help="samples per prompt")
    p.add_argument("--workload", default="fixed", choices=("fixed", "variable", "both"))
    p.add_argument("--sigma", type=float, default=1.0, help="lognormal sigma of the variable lengths")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"subset of {', '.join(ENGINES)}")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--refill-factor", type=int, default=4,
                   help="fast_refill: sequences asked for, in multiples of the N rows decoded at once")
    p.add_argument("--refill-horizon", type=int, default=FastEngineConfig.refill_horizon,
                   help="fast_refill: a run's output columns in --new-tokens (FastEngineConfig.refill_horizon); "
                        "each run ends with a drain, so a deep queue wants one run")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a smoke run (--shape tiny)")
    p.add_argument("--out", default=out_path("bench_rollout.json"))
    args = p.parse_args(argv)
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise SystemExit(f"unknown engines {sorted(unknown)}; valid: {', '.join(ENGINES)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    if any(n % args.group for n in sizes):
        raise SystemExit(f"--sizes must be multiples of --group {args.group}")
    work = Workload(args.prompt_len, args.new_tokens, args.group, args.device)
    model = build_model(args.shape, args.device, eos_token_id=None).eval()
    vocab = SHAPES[args.shape]["vocab_size"]
    all_rows = []
    for n in sizes:
        prompt_ids = prompts(n // args.group, args.prompt_len, vocab, seed=n)
        end_at = end_lengths(n, args.new_tokens, args.sigma, seed=n)
        rows, fixed_fast = [], None
        for name in engines:
            if name == "fast_refill":
                if args.workload != "fixed":
                    rows.append(refill_row(model, work, n, args, fixed_fast))
                continue
            if name.startswith("hf"):
                if args.workload != "variable":
                    rows.append(measure_peer(name, model, prompt_ids, work, n, args.reps))
                continue
            fixed = None
            if args.workload != "variable":
                fixed = measure_fast(name, model, prompt_ids, work, n, args.reps)
                rows.append(fixed)
                fixed_fast = fixed if name == "fast" else fixed_fast
            if args.workload != "fixed":
                variable = measure_fast(name, model, prompt_ids, work, n, args.reps, end_at)
                rows.append(variable_row(fixed or Row("", None, "tok/s"), variable, end_at))
        static = "hf generate (static cache, compiled)"
        baseline = static if any(r.name == static and r.value for r in rows) else rows[0].name
        title = (f"rollout, {shape_label(args.shape)}, N={n} sequences ({n // args.group} prompts x G={args.group}), "
                 f"prompt {args.prompt_len} + {args.new_tokens} new")
        print_table(title, rows, baseline=baseline)
        all_rows += rows
    save(args.out, "rollout throughput", all_rows,
         {"sizes": sizes, "shape": args.shape, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
          "group": args.group, "workload": args.workload, "sigma": args.sigma})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
