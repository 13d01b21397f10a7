"""The eval stage's wall time on SmolLM2-135M-Instruct: fast engine against transformers `generate`.

The workload of `recipes/smollm2-135m-arithmetic.yaml`'s eval: held-out arithmetic and word
problems at difficulties 1-3, greedy + k=8 samples at temperature 1, 256 new tokens, r1_chat
prompts. The fast engine runs all --num-problems; transformers `generate` (the engine eval used
before) runs --hf-problems of them, and its row is scaled to --num-problems (seconds per problem
are flat in the number of problems at a fixed batch size), which the note says.

    python benchmarks/bench_eval.py --num-problems 200 --hf-problems 32
"""
from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import Row, out_path, print_table, save


def run_eval(policy, examples, engine: str, batch_size: int, max_new_tokens: int) -> tuple[float, dict]:
    from rlvr.pipeline.stages.eval import EvalStageConfig, evaluate
    from rlvr.rollout.sampling import SamplingConfig

    cfg = EvalStageConfig(num_problems=len(examples), k=8,
                          sampling=SamplingConfig(max_new_tokens=max_new_tokens),
                          batch_size=batch_size, engine=engine)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    metrics = evaluate(policy, examples, "r1_chat", cfg, seed=0)
    torch.cuda.synchronize()
    return time.perf_counter() - t0, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-problems", type=int, default=200)
    parser.add_argument("--hf-problems", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=512, help="rows per generate call (fast engine)")
    args = parser.parse_args()

    from rlvr.models import ModelConfig, load_policy
    from rlvr.tasks import make_task

    t0 = time.perf_counter()
    policy = load_policy(ModelConfig(name_or_path="smollm2-135m"), device="cuda", train=False)
    load_s = time.perf_counter() - t0
    task = make_task("mixed", seed=0, difficulty=[1, 2, 3], tasks=["arithmetic", "word_problems"])
    examples = task.held_out(args.num_problems)
    rows, metrics = [], {}
    # first call: Triton builds and CUDA-graph captures, as in a stage's first eval
    first_s, metrics["fast"] = run_eval(policy, examples, "fast", args.batch_size, args.max_new_tokens)
    again_s, _ = run_eval(policy, examples, "fast", args.batch_size, args.max_new_tokens)
    rows.append(Row("rlvr eval, fast engine (first call, with graph capture)", first_s, "s",
                    note=f"{args.num_problems} problems"))
    rows.append(Row("rlvr eval, fast engine (warm)", again_s, "s", note=f"{args.num_problems} problems"))
    hf_s, metrics["hf"] = run_eval(policy, examples[:args.hf_problems], "hf", 64, args.max_new_tokens)
    _, metrics["fast_on_hf_problems"] = run_eval(policy, examples[:args.hf_problems], "fast", args.batch_size,
                                                 args.max_new_tokens)
    rows.append(Row("rlvr eval, transformers generate (scaled)", hf_s * args.num_problems / args.hf_problems,
                    "s", note=f"{hf_s:.1f} s measured on {args.hf_problems} problems, batch 64 rows"))
    title = (f"Eval of SmolLM2-135M-Instruct: {args.num_problems} problems, greedy + k=8, "
             f"{args.max_new_tokens} new tokens (model load {load_s:.1f} s, not counted)")
    print_table(title, rows, baseline="rlvr eval, transformers generate (scaled)")
    for name, m in metrics.items():
        print(f"metrics ({name}):", {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()})
    save(out_path("bench_eval.json"), title, rows, {"metrics": metrics, "load_s": load_s})


if __name__ == "__main__":
    main()
