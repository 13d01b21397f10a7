"""GRPO step time: rlvr's trainer (`run_grpo`: fast rollout engine + Triton fused loss) against
TRL's `GRPOTrainer` (transformers generate), same model, batch, lengths and reward, same GPU.

Model: `--shape` (0.5b = Qwen2-0.5B shape, 1.5b = Qwen2.5-1.5B shape), random weights, bf16 (both
train the bf16 weights with AdamW, lr 1e-6, loss dapo, beta 0, one update per batch). Batch:
`--prompts` prompts x G=`--group`, prompt `--prompt-len` tokens (a word-level tokenizer made here:
one word, one token), `--new-tokens` completion tokens (a random model samples EOS with
probability about 1/V per token, so nearly every completion is full length), temperature 1.
Reward: a deterministic pseudo-random function of the completion text (crc32), the same for both.
Step time: median over steps 2..K (step 1 holds compilation / graph capture / allocator warm-up).

    python benchmarks/bench_grpo_step.py [--shape 0.5b] [--prompts 8] [--group 8] [--prompt-len 128]
        [--new-tokens 256] [--steps 4] [--skip trl] [--packing] [--set KEY=VALUE] [--out FILE]

`--packing` runs rlvr's update forwards padding-free (`grpo.packing`). Prompts here all have the
same length and nearly every completion runs full length, so there is little padding to save:
the row shows packing's overhead more than its gain.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (SHAPES, Row, WordTask, grpo_config, median, out_path, print_table,  # noqa: E402
                               rlvr_policy, run_grpo_steps, save, shape_label, sync, text_reward, word_prompt,
                               word_tokenizer)
from benchmarks.common import build_model as build_shape  # noqa: E402

PROMPTS, GROUP, PROMPT_LEN, NEW_TOKENS = 8, 8, 128, 256
"""Defaults (profile_train_step.py uses them too)."""
SHAPE, DEVICE = "0.5b", "cuda"
PRECISION = "bf16"
"""rlvr's training precision: bf16 (bfloat16 weights, as TRL trains here), bf16-mixed (float32
masters, rlvr's CUDA default) or bf16-kahan (bfloat16 weights, KahanAdamW)."""
"""Set by main from --shape and --device."""
PACKING = False
"""rlvr's update forwards on packed rows (`grpo.packing`)."""
SETTINGS: dict = {}
"""Further GRPOConfig keys of rlvr's run, from --set (engine.KEY: the fast engine's options)."""
VOCAB = SHAPES[SHAPE]["vocab_size"]


def build_tokenizer():
    return word_tokenizer(VOCAB)


def build_model():
    """The benchmark's model (SHAPE on DEVICE, EOS id 1), in training mode."""
    return build_shape(SHAPE, DEVICE, eos_token_id=1, train=True)


def prompt_words(i: int) -> str:
    """Prompt i: PROMPT_LEN - 2 words, which the plain template ("Q: ... A:") makes PROMPT_LEN tokens."""
    return word_prompt(i, VOCAB, PROMPT_LEN)


# ----------------------------------------------------------------------------- rlvr

def run_rlvr(steps: int, workdir: Path) -> list[float]:
    cfg = grpo_config(PROMPTS, GROUP, NEW_TOKENS, steps, packing=PACKING, **SETTINGS)
    policy = rlvr_policy(build_model(), build_tokenizer(), PRECISION if DEVICE == "cuda" else "fp32")
    records = run_grpo_steps(policy, WordTask(VOCAB, PROMPT_LEN), cfg, workdir / "rlvr")
    times = [r["time/step"] for r in records if "time/step" in r]
    print(f"rlvr step times {[round(t, 3) for t in times]}", flush=True)
    # the phases, and what memory took: the step's peak, and how the update was split (split_on_oom may halve it)
    shown = ("memory/peak_gib", "update/micro_batches", "update/oom_splits")
    for key in sorted({k for r in records for k in r if (k.startswith("time/") and k != "time/step") or k in shown}):
        print(f"  {key} {[round(r[key], 3) for r in records if key in r]}", flush=True)
    return times


# ----------------------------------------------------------------------------- TRL

def run_trl(steps: int, workdir: Path) -> list[float]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], None

        def on_step_begin(self, args, state, control, **kw):
            sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync()
            self.times.append(time.perf_counter() - self.t0)

    def reward(completions, **kw):
        return [text_reward(c) for c in completions]

    prompts = [f"Q: {prompt_words(i)}\nA: " for i in range(PROMPTS * steps)]
    args = GRPOConfig(output_dir=str(workdir / "trl"), per_device_train_batch_size=PROMPTS * GROUP,
                      num_generations=GROUP, max_completion_length=NEW_TOKENS, temperature=1.0,
                      learning_rate=1e-6, beta=0.0, loss_type="dapo", max_steps=steps, bf16=torch.cuda.is_available(),
                      logging_steps=1, report_to="none", save_strategy="no", seed=0)
    timer = StepTimer()
    trainer = GRPOTrainer(model=build_model(), reward_funcs=reward, args=args,
                          train_dataset=Dataset.from_dict({"prompt": prompts}),
                          processing_class=build_tokenizer(), callbacks=[timer])
    trainer.train()
    print(f"trl step times {[round(t, 3) for t in timer.times]}", flush=True)
    return timer.times


def configure(args) -> None:
    """The workload globals every function reads (module-level: profile_train_step imports them)."""
    global SHAPE, DEVICE, VOCAB, PROMPTS, GROUP, PROMPT_LEN, NEW_TOKENS, PRECISION, PACKING, SETTINGS
    if args.prompt_len < 3:
        raise SystemExit("--prompt-len must be >= 3 (the template takes two tokens)")
    SHAPE, DEVICE, VOCAB = args.shape, args.device, SHAPES[args.shape]["vocab_size"]
    PROMPTS, GROUP, PROMPT_LEN, NEW_TOKENS = args.prompts, args.group, args.prompt_len, args.new_tokens
    PRECISION = getattr(args, "precision", PRECISION)
    PACKING = getattr(args, "packing", PACKING)
    SETTINGS = settings(getattr(args, "set", None) or [])


def settings(items: list[str]) -> dict:
    """["attention_backends=[flash]", "engine.check_every=32"] -> {"attention_backends": ["flash"],
    "engine": {"name": "fast", "check_every": 32}}: values are YAML."""
    import yaml

    out: dict = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SystemExit(f"--set: expected KEY=VALUE, got {item!r}")
        *parents, leaf = key.strip().split(".")
        node = out
        for parent in parents:
            node = node.setdefault(parent, {"name": "fast"} if parent == "engine" else {})
        node[leaf] = yaml.safe_load(value)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default=SHAPE, choices=sorted(set(SHAPES) - {"7b"}))
    p.add_argument("--prompts", type=int, default=PROMPTS, help="prompts per step")
    p.add_argument("--group", type=int, default=GROUP, help="samples per prompt")
    p.add_argument("--prompt-len", type=int, default=PROMPT_LEN, help="prompt tokens (>= 3)")
    p.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    p.add_argument("--device", default=DEVICE, choices=("cuda", "cpu"), help="cpu: a smoke run (--shape tiny)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--precision", default=PRECISION, choices=("bf16", "bf16-mixed", "bf16-kahan"),
                   help="rlvr's training precision (TRL trains bfloat16 weights here)")
    p.add_argument("--packing", action="store_true", help="rlvr's update on packed rows (grpo.packing)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a further GRPOConfig key of rlvr's run (repeatable; engine.KEY for the engine's options)")
    p.add_argument("--skip", default="", help="comma list: trl, rlvr")
    p.add_argument("--out", default=out_path("bench_grpo_step.json"))
    args = p.parse_args(argv)
    configure(args)
    skip = set(filter(None, args.skip.split(",")))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("rlvr run_grpo (fast engine + triton loss)", run_rlvr),
                         ("TRL GRPOTrainer (HF generate)", run_trl)):
            if name.split()[0].lower() in skip:
                continue
            try:
                times = fn(args.steps, Path(tmp))
                steady = times[1:] or times
                rows.append(Row(name, median(steady), "s", note=f"steps 2..{len(times)}", samples=times))
            except Exception as e:  # report the failure as a row; the other trainer still runs
                import traceback

                traceback.print_exc()
                rows.append(Row(name, None, "s", note=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}"))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    title = (f"GRPO step, {PROMPTS} prompts x G={GROUP}, prompt {PROMPT_LEN} + {NEW_TOKENS} new, "
             f"{shape_label(SHAPE)} bf16, rlvr precision {PRECISION}{', packed update' if PACKING else ''}"
             f"{', ' + str(SETTINGS) if SETTINGS else ''}")
    print_table(title, rows, baseline="TRL GRPOTrainer (HF generate)")
    save(args.out, title, rows, {"shape": SHAPE, "prompts": PROMPTS, "group": GROUP, "prompt_len": PROMPT_LEN,
                                 "new_tokens": NEW_TOKENS, "packing": PACKING, "settings": SETTINGS})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
