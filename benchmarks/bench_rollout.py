"""Rollout throughput: transformers `generate` (dynamic cache; static cache + torch.compile) against
rlvr's fast engine (fused Triton or torch decode kernels, each in a CUDA graph, with or
without torch.compile), on the same model and prompts.

Model: Qwen2-0.5B shape (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocab 151936),
random weights, bf16. Workload: N sequences = N/8 prompts x G=8 samples, prompt 128 tokens, 256
new tokens each, sampling at temperature 1 with no top-k/top-p, no EOS (every sequence runs the
full 256 tokens). tok/s = new tokens / wall time of the whole generate call (median of reps,
after a warm-up call of the same shape: compilation and graph capture are not timed).

    python benchmarks/bench_rollout.py [--sizes 256,64] [--engines hf,hf_static,fast,fast_compiled] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Row, host_time_s, median, out_path, print_table, save  # noqa: E402

PROMPT_LEN, NEW_TOKENS, GROUP = 128, 256, 8
ENGINES = ("fast", "fast_gemm", "fast_compiled", "fast_torch", "fast_torch_compiled", "hf_static", "hf")
"""fast: the default (triton kernels around cuBLAS GEMMs); fast_gemm: with the norm-fused Triton
GEMMs (FastEngineConfig.fuse_gemms=True); fast_torch: torch ops; *_compiled: + torch.compile."""


class IdTokenizer:
    """The few tokenizer members the engines use; text is the ids joined (no vocabulary needed)."""

    eos_token_id = None  # no EOS: every sequence generates NEW_TOKENS tokens
    pad_token_id = 0

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def build_model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_theta=1e6, tie_word_embeddings=True, bos_token_id=None, eos_token_id=None,
                         pad_token_id=0)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def prompts(n_prompts: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, 151000, (n_prompts, PROMPT_LEN), generator=g).tolist()


def hf_runner(model, prompt_ids, static: bool):
    from transformers import GenerationConfig

    rows = [p for p in prompt_ids for _ in range(GROUP)]  # the same N sequences as the fast engine
    ids = torch.tensor(rows, device="cuda")
    mask = torch.ones_like(ids)
    extra = {"cache_implementation": "static"} if static else {}
    cfg = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=NEW_TOKENS,
                           min_new_tokens=NEW_TOKENS, pad_token_id=0, eos_token_id=None, **extra)

    def run() -> int:
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)
        return (out.shape[1] - ids.shape[1]) * out.shape[0]
    return run


def fast_runner(model, prompt_ids, compiled: bool, kernels: str, fuse_gemms: bool = True):
    from rlvr.rollout.base import SamplingParams
    from rlvr.rollout.fast import FastEngine, FastEngineConfig

    engine = FastEngine(model, IdTokenizer(), FastEngineConfig(compile=compiled, kernels=kernels,
                                                               fuse_gemms=fuse_gemms))
    params = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=1.0)

    def run() -> int:
        out = engine.generate(prompt_ids, GROUP, params)
        return sum(out.lengths)
    return run, engine


def fast_label(engine) -> str:
    """What the engine ran after capture (a failed Triton build falls back with a warning)."""
    kernels = ("triton kernels + fused GEMMs" if engine.fused_gemms else
               "triton kernels" if engine.fused else "torch ops")
    return f"rlvr fast ({kernels}, CUDA graph{' + compile' if engine.config.compile else ''})"


def measure(name: str, run, n: int, reps: int, warmup: bool = True) -> Row:
    try:
        if warmup:
            run()
        counts = []
        times = host_time_s(lambda: counts.append(run()), reps)
    except Exception as e:  # a peer that fails is a row with a reason, not a crash of the benchmark
        torch.cuda.empty_cache()
        return Row(name, None, "tok/s", note=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}")
    expected = n * NEW_TOKENS
    note = "" if all(c == expected for c in counts) else f"generated {counts}, expected {expected}"
    tok_s = [c / t for c, t in zip(counts, times)]
    row = Row(name, median(tok_s), "tok/s", note=note, samples=tok_s)
    print(f"{name}: {row.value:,.0f} tok/s  ({[round(t, 3) for t in times]} s) {note}", flush=True)
    torch.cuda.empty_cache()
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="256,64", help="sequence counts N (multiples of 8)")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"subset of {', '.join(ENGINES)}")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default=out_path("bench_rollout.json"))
    args = p.parse_args(argv)
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise SystemExit(f"unknown engines {sorted(unknown)}; valid: {', '.join(ENGINES)}")
    model = build_model()
    all_rows = {}
    for n in (int(s) for s in args.sizes.split(",")):
        prompt_ids = prompts(n // GROUP, seed=n)
        rows = []
        for name in engines:
            if name == "hf":  # about 16 s a call at N=256: one timed call, warm-up on a short run
                run = hf_runner(model, prompt_ids, static=False)
                rows.append(measure("hf generate (dynamic cache)", run, n, reps=1, warmup=False))
            elif name == "hf_static":
                run = hf_runner(model, prompt_ids, static=True)
                rows.append(measure("hf generate (static cache, compiled)", run, n, reps=args.reps))
            else:
                kernels = "torch" if "torch" in name else "triton"
                run, engine = fast_runner(model, prompt_ids, name.endswith("compiled"), kernels,
                                          fuse_gemms=name == "fast_gemm")
                rows.append(measure(name, run, n, args.reps))
                rows[-1].name = fast_label(engine)  # known only after the warm-up call captured
        static = "hf generate (static cache, compiled)"
        baseline = static if any(r.name == static and r.value for r in rows) else rows[0].name
        title = f"rollout, N={n} sequences ({n // GROUP} prompts x G={GROUP}), prompt {PROMPT_LEN} + {NEW_TOKENS} new"
        print_table(title, rows, baseline=baseline)
        all_rows[n] = rows
    save(args.out, "rollout throughput", [r for rows in all_rows.values() for r in rows],
         {"sizes": list(all_rows)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
