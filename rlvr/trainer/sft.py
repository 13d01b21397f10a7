"""Supervised fine-tuning on prompt/completion pairs through TRL's `SFTTrainer`.

Used by recipes for the R1 cold start (a generator's worked solutions teach the
`<think>`/`<answer>` format) and for rejection-sampling SFT (the verified completions a
`rejection_sampling` stage kept). The loss covers completion tokens only: the dataset uses TRL's
prompt-completion format with `completion_only_loss=True`, so the prompt tokens get label -100.

The character tokenizer of the tiny model is a `PreTrainedTokenizerFast` with distinct pad and EOS
tokens, which is all SFTTrainer needs (it appends EOS to each completion and masks padding).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

import torch

from rlvr.tasks.base import Example
from rlvr.trainer.distributed import check_kahan_engine
from rlvr.trainer.optimizer import KahanAdamW
from rlvr.trainer.sft_config import SFTStageConfig


def worked_solution_pairs(examples: Iterable[Example], tokenizer, prompt_format) -> list[dict]:
    """Prompt/completion pairs from examples that carry a worked `solution`; `prompt_format`: a
    `rlvr.tasks.prompts.PromptFormat` (or a template name), the one every stage renders with."""
    from rlvr.tasks.prompts import as_format

    fmt = as_format(prompt_format)
    pairs = []
    for ex in examples:
        if not ex.solution:
            raise ValueError(f"example {ex.id or ex.prompt[:40]!r} has no worked solution for SFT")
        pairs.append({"prompt": fmt.render(ex, tokenizer), "completion": ex.solution})
    return pairs


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` folder the HF Trainer wrote, if any."""
    if not checkpoint_dir.is_dir():
        return None
    found = [p for p in checkpoint_dir.glob("checkpoint-*")
             if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _trl_args(cfg: SFTStageConfig, checkpoint_dir: Path, seed: int, precision: str):
    from dataclasses import fields

    from trl import SFTConfig

    from rlvr.models.precision import accelerate_mixed_precision

    on_gpu = torch.cuda.is_available()
    # The policy comes checkpointed or not as model.gradient_checkpointing says (load_policy, as for GRPO);
    # TRL's default (on) would recompute every SFT stage's activations, a third more compute, whatever it
    # said. transformers 5 renamed the key.
    names = {f.name for f in fields(SFTConfig)}
    checkpointing_off = {"activation_checkpointing" if "activation_checkpointing" in names
                         else "gradient_checkpointing": False}
    return SFTConfig(
        **checkpointing_off,
        output_dir=str(checkpoint_dir),
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=int(cfg.warmup_ratio * cfg.steps),
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_length,
        completion_only_loss=True,
        packing=False,
        # bf16-mixed: the Trainer's bf16 autocast over the float32 master weights the policy was
        # loaded with (AdamW state float32 too); bf16 and fp32 train the weights as loaded
        bf16=accelerate_mixed_precision(precision) == "bf16",
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=1,
        logging_steps=cfg.logging_steps,
        report_to="none",
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        dataloader_pin_memory=on_gpu,
        log_level="warning",
        # Several CPU processes (gloo) must be asked for explicitly; see rlvr.trainer.distributed.
        use_cpu=not on_gpu,
    )


def _optimizer(args, precision: str) -> tuple | None:
    """bf16-kahan: the Trainer builds `KahanAdamW` with its own settings (weight decay groups,
    betas, eps); None keeps the Trainer's AdamW."""
    if precision != "bf16-kahan":
        return None
    return KahanAdamW, dict(lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)


def run_sft(policy, pairs: list[dict], cfg: SFTStageConfig, output_dir: str | Path,
            resume: bool = False, seed: int = 0) -> dict[str, Any]:
    """Train `policy` on prompt/completion `pairs`; save it to `output_dir/model`.

    Checkpoints go to `output_dir/checkpoints/checkpoint-N` (TRL/HF layout); with `resume` the
    newest one is restored (model, optimizer, scheduler, RNG, data position). Each log entry is
    appended to `output_dir/metrics.jsonl`. Returns the final metrics.
    """
    from datasets import Dataset
    from trl import SFTTrainer

    from rlvr.models import save_policy
    from rlvr.models.precision import warn_pure_bf16

    if not pairs:
        raise ValueError("SFT got an empty dataset")
    warn_pure_bf16(policy.precision, cfg.learning_rate, policy.model)
    out = Path(output_dir)
    checkpoint_dir = out / "checkpoints"
    args = _trl_args(cfg, checkpoint_dir, seed, policy.precision)
    trainer = SFTTrainer(
        model=policy.model,
        args=args,
        train_dataset=Dataset.from_list(pairs),
        processing_class=policy.tokenizer,
        optimizer_cls_and_kwargs=_optimizer(args, policy.precision),
    )
    if policy.precision == "bf16-kahan":
        check_kahan_engine(trainer.accelerator)
    checkpoint = latest_checkpoint(checkpoint_dir) if resume else None
    try:
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except torch.OutOfMemoryError as e:
        raise _memory_hint(cfg, policy.config.gradient_checkpointing, e) from e
    policy.model = trainer.model
    if trainer.accelerator.is_main_process:
        save_policy(policy, out / "model")
        _write_log(trainer.state.log_history, out / "metrics.jsonl")
        # The saved model is the stage's result; optimizer checkpoints only serve an unfinished run.
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return _final_metrics(trainer.state.log_history, result.training_loss, len(pairs), cfg.steps)


def _memory_hint(cfg: SFTStageConfig, checkpointing: bool, error: BaseException) -> torch.OutOfMemoryError:
    """The error, naming the settings that trade speed for memory. SFT keeps every layer's activations
    unless the model asks for checkpointing (TRL's SFT checkpoints by default; rlvr follows the model)."""
    first = str(error).splitlines()[0] if str(error) else ""
    remedy = "" if checkpointing else (
        "set the model's gradient_checkpointing: true (activations recomputed in the backward; "
        "`rlvr run --resume auto` continues the stage from its last checkpoint with it), or ")
    return torch.OutOfMemoryError(
        f"out of memory in the SFT stage, {cfg.batch_size} sequences x up to {cfg.max_length} tokens per forward: "
        f"{remedy}set the stage's batch_size lower and gradient_accumulation_steps higher (the same update; "
        f"the stage starts over: `--resume auto --rerun-changed`) or max_length lower. {first}")


def _write_log(history: list[dict], path: Path) -> None:
    """The Trainer's log history as metrics.jsonl (rewritten whole: a resumed run restores it)."""
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w") as f:
        for entry in history:
            if "loss" in entry:
                row = {"step": entry["step"], **{f"sft/{k}": v for k, v in entry.items()
                                                 if k not in ("step", "epoch")}}
                f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)


def _final_metrics(history: list[dict], train_loss: float, num_pairs: int, steps: int) -> dict:
    last = next((e for e in reversed(history) if "loss" in e), {})
    metrics = {"sft/train_loss": float(train_loss), "sft/num_pairs": num_pairs, "sft/steps": steps}
    for key in ("loss", "mean_token_accuracy", "entropy"):
        if key in last:
            metrics[f"sft/final_{key}"] = float(last[key])
    return metrics
