"""Held-out accuracy of a saved model on GSM8K problems from a local jsonl (`question`/`answer` rows
with `#### n` answers, as the published files), greedy and pass@k, with the chat-template R1 prompt
the SmolLM2 recipes train with.

    python benchmarks/eval_gsm8k.py --model runs/smollm2-135m-r1/9-grpo-2/model \
        --test gsm8k_test.jsonl --train gsm8k_train.jsonl
"""
from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, nargs="+", help="one or more saved model folders (or smollm2-135m)")
    parser.add_argument("--test", required=True, help="jsonl of held-out GSM8K rows")
    parser.add_argument("--train", required=True, help="jsonl of GSM8K training rows (the loader's train split)")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--out", default=None, help="write the metrics as JSON here")
    args = parser.parse_args()

    from rlvr.models import ModelConfig, load_policy
    from rlvr.pipeline.stages.eval import EvalStageConfig, evaluate
    from rlvr.rollout.sampling import SamplingConfig
    from rlvr.tasks import make_task

    task = make_task("dataset", source={"train": args.train, "test": args.test}, preset="gsm8k")
    with open(args.test) as f:
        examples = task.held_out(sum(1 for line in f if line.strip()))
    results = {}
    for model in args.model:
        t0 = time.perf_counter()
        policy = load_policy(ModelConfig(name_or_path=model), train=False)
        cfg = EvalStageConfig(num_problems=len(examples), k=args.k,
                              sampling=SamplingConfig(max_new_tokens=args.max_new_tokens),
                              batch_size=512)
        metrics = evaluate(policy, examples, "r1_chat", cfg, seed=0)
        metrics["seconds"] = time.perf_counter() - t0
        results[model] = metrics
        print(f"{model}: GSM8K held-out ({len(examples)} problems) " +
              ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
