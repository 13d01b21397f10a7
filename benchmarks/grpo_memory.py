"""Peak GPU memory of a GRPO step at the SmolLM2-135M R1 recipes' shape, with and without
`micro_batch_tokens`: what the recipes' setting buys on an 80 GB card.

The recipes' GRPO stages run 32 prompts x 8 samples, 192 new tokens after prompts of up to about 110
tokens, LoRA r16 on every linear layer, and attention on torch's math SDPA kernel, which keeps each
layer's float32 scores (rows x heads x width^2) for the backward. Here the same step runs on a
SmolLM2-135M-shaped Llama built in code (hidden 576, 30 layers, 9 heads, MLP 1536; random weights,
character tokenizer) on 2-digit additions with 288 new tokens, so the longest rows reach about the same
303-token width. Each setting is one `rlvr run` of a one-stage recipe; the trainer's
`memory/peak_gib` (peak allocated over a step) and the step time are read from its metrics. The whole
batch runs with `split_on_oom` off (does it fit?) and on (the trainer's default: halve after an error).

    python benchmarks/grpo_memory.py [--budgets 0,16384] [--steps 3] [--prompts 32] [--new-tokens 288]
        [--shape smollm2-135m|tiny] [--lora/--no-lora] [--work runs/grpo_memory]

Without CUDA the figure is the child's host peak RSS (the CPU's memory for the same step).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Row, out_path, print_table, save  # noqa: E402

RECIPE = """\
name: grpo-memory
seed: 0
model:
  name_or_path: tiny
  tiny: {{architecture: llama, hidden_size: {hidden}, num_layers: {layers}, num_heads: {heads},
         intermediate_size: {mlp}, max_position_embeddings: 512}}
{lora}task: {{name: arithmetic, difficulty: 2, options: {{ops: ["+"]}}}}
template: plain
stages:
  - type: grpo
    name: grpo
    steps: {steps}
    prompts_per_step: {prompts}
    num_generations: 8
    max_new_tokens: {new_tokens}
    learning_rate: 1.0e-5
    loss_type: dapo
    attention_backends: [math]
    micro_batch_tokens: {budget}
    split_on_oom: {split}
    report_to: none
"""
SHAPE = {"smollm2-135m": dict(hidden=576, layers=30, heads=9, mlp=1536),
         "tiny": dict(hidden=32, layers=1, heads=2, mlp=64)}  # tiny: a smoke run
LORA = "  lora: {r: 16, alpha: 32, dropout: 0.0, target_modules: all-linear}\n"


# `rlvr run` in a child that reports its own host peak RSS when it exits (the figure on the CPU)
LAUNCH = ("import atexit, resource, sys\n"
          "atexit.register(lambda: print('host peak RSS KiB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
          "from rlvr.cli import main\n"
          "sys.exit(main(sys.argv[1:]))")


def run(budget: int, split: bool, args) -> Row:
    tag = f"budget{budget}{'' if split else '_nosplit'}"
    folder = Path(args.work) / tag
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    recipe = folder.parent / f"{tag}.yaml"
    recipe.write_text(RECIPE.format(steps=args.steps, budget=budget, split=str(split).lower(), prompts=args.prompts,
                                    new_tokens=args.new_tokens, lora=LORA if args.lora else "", **SHAPE[args.shape]))
    log = folder.parent / f"{tag}.log"
    with log.open("w") as f:
        done = subprocess.run([sys.executable, "-c", LAUNCH, "run", str(recipe), "--output-dir", str(folder)],
                              stdout=f, stderr=subprocess.STDOUT)
    name = (f"micro_batch_tokens {budget}" if budget else "whole batch") + ("" if split else ", split_on_oom off")
    text = log.read_text()
    rss = [int(line.split()[-1]) / 2**20 for line in text.splitlines() if line.startswith("host peak RSS KiB")]
    metrics = folder / "metrics.jsonl"
    steps = [json.loads(line) for line in metrics.open()] if metrics.is_file() else []
    steps = [s for s in steps if "completions/max_length" in s]
    if done.returncode != 0:
        last = [line for line in text.splitlines() if "Error" in line][-1:] or ["see the log"]
        return Row(name, None, "GiB", note=f"exit {done.returncode} after {len(steps)} steps: {last[0][:200]}")
    gpu = [s["memory/peak_gib"] for s in steps if "memory/peak_gib" in s]
    note = (f"{'GPU peak per step ' + str([round(p, 1) for p in gpu]) if gpu else 'host peak RSS (no CUDA)'}; "
            f"host peak RSS {rss[0] if rss else float('nan'):.1f} GiB; {len(steps)} steps; widest completion "
            f"{max(s['completions/max_length'] for s in steps):.0f} tokens; step "
            f"{min(s['time/step'] for s in steps[1:] or steps):.2f} s (fastest after the first); update passes "
            f"{steps[-1].get('update/micro_batches', 1):.0f}; out-of-memory splits "
            f"{sum(s.get('update/oom_splits', 0) for s in steps):.0f}")
    value = max(gpu) if gpu else (rss[0] if rss else None)
    print(f"{name}: {value:.2f} GiB; {note}", flush=True)
    return Row(name, value, "GiB", samples=gpu, note=note)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", default="0,16384", help="micro_batch_tokens settings to run (0: the whole batch, "
                   "run with split_on_oom off and on)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--prompts", type=int, default=32, help="prompts per step (x 8 samples)")
    p.add_argument("--new-tokens", type=int, default=288)
    p.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPE))
    p.add_argument("--lora", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--work", default="runs/grpo_memory")
    p.add_argument("--out", default=out_path("grpo_memory.json"))
    args = p.parse_args(argv)
    runs = [(int(b), split) for b in args.budgets.split(",")
            for split in ((False, True) if int(b) == 0 else (True,))]
    rows = [run(b, split, args) for b, split in runs]
    print_table(f"GRPO step peak memory, {args.shape} shape, {args.prompts * 8} rows, math attention"
                + (", LoRA r16" if args.lora else ""), rows, baseline=rows[0].name)
    save(args.out, "GRPO step peak memory", rows, {"steps": args.steps, "lora": args.lora, "shape": args.shape,
                                                    "prompts": args.prompts, "new_tokens": args.new_tokens})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
