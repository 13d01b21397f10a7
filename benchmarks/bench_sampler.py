"""The decode step's sampler on its own: one token per row from softmax(logits / T) and the token's
log-prob, at a Qwen vocabulary, against torch's softmax + multinomial + gather (what HF's
`generate` does at temperature > 0), each replayed from a CUDA graph of --calls calls (as in the
engine, so Python's launch cost is not timed).

    python benchmarks/bench_sampler.py [--rows 64,256] [--vocab 151936] [--temperature 1.0]
        [--compare-module MODULE] [--out FILE]

--compare-module imports another `sample_` (a module path with the same signature, e.g. a copy of
an earlier fast_kernels.py) and times it in the same run. Each row also reports the largest
difference between the sampled tokens' log-probs and torch's log_softmax at those tokens.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Row, graph_replay_us, median, out_path, print_table, save  # noqa: E402


def torch_sample(logits: torch.Tensor, temperature: float, seed: torch.Tensor):
    """The peer: softmax, multinomial, log-prob of the draw (seed unused: torch's generator)."""
    logp = (logits.float() / temperature).log_softmax(-1)
    token = torch.multinomial(logp.exp(), 1).squeeze(1)
    return token, logp.gather(1, token[:, None]).squeeze(1)


def logp_error(fn, logits, temperature) -> float:
    token, logp = fn(logits, temperature, torch.tensor([1], device=logits.device))
    ref = (logits.float() / temperature).log_softmax(-1).gather(1, token[:, None]).squeeze(1)
    return (logp - ref).abs().max().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="64,256")
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--compare-module", default="")
    ap.add_argument("--out", default=out_path("bench_sampler.json"))
    args = ap.parse_args()
    from rlvr.rollout.fast_kernels import sample_

    samplers = {"rlvr sample_": sample_}
    if args.compare_module:
        samplers[f"{args.compare_module}.sample_"] = importlib.import_module(args.compare_module).sample_
    samplers["torch softmax + multinomial"] = torch_sample
    records = {}
    for n in [int(x) for x in args.rows.split(",")]:
        g = torch.Generator(device="cuda").manual_seed(0)
        logits = (torch.randn(n, args.vocab, device="cuda", generator=g) * 3).to(torch.bfloat16)
        rows = []
        for name, fn in samplers.items():
            seed = torch.zeros(1, dtype=torch.long, device="cuda")  # advanced after each call, as the engine does
            call = lambda: (fn(logits, args.temperature, seed), seed.add_(1))  # noqa: E731
            times = graph_replay_us(call, args.calls, args.reps)
            error = logp_error(fn, logits, args.temperature)
            rows.append(Row(name, median(times), "us", note=f"{n} rows; max |log-prob - torch| {error:.1e}",
                            samples=times))
        title = f"sampler, {n} rows x vocab {args.vocab}, T={args.temperature}, bf16 logits (us per call)"
        print_table(title, rows, baseline="torch softmax + multinomial")
        records[title] = rows
    save(args.out, "sampler: " + "; ".join(records), [r for rows in records.values() for r in rows])


if __name__ == "__main__":
    main()
