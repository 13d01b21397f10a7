"""Training precision: the dtype weights are kept in, the dtype the math runs in, and what
generation reads.

| precision    | weights  | optimizer state             | forward / backward | generation reads              |
|--------------|----------|-----------------------------|--------------------|-------------------------------|
| `bf16-mixed` | float32  | float32 moments             | bfloat16 autocast  | a bfloat16 copy, per rollout  |
| `bf16-kahan` | bfloat16 | float32 moments, bf16 comp. | bfloat16           | the weights                   |
| `bf16`       | bfloat16 | bfloat16 moments            | bfloat16           | the weights                   |
| `fp32`       | float32  | float32 moments             | float32            | the weights                   |

`auto` is `bf16-mixed` on CUDA and `fp32` on the CPU. Pure `bf16` loses small updates: an AdamW
step moves each weight by about the learning rate (1e-6 in GRPO), while bfloat16 resolves only
2^-8 of a weight's magnitude (8e-5 at 0.02), so the step rounds back to the old value. That is
why DeepSpeed, FSDP and Megatron keep float32 master weights; `bf16-mixed` does the same.
`bf16-kahan` keeps what rounding drops in a bfloat16 buffer instead (`rlvr.trainer.optimizer`):
the updates add up as in float32, and a parameter costs 14 bytes with its gradient (bfloat16
weight, gradient and compensation; float32 moments) against bf16-mixed's 18 (float32 master and
gradient, moments, a bfloat16 copy for generation).
"""
from __future__ import annotations

import warnings

import torch

PRECISIONS = ("auto", "bf16-mixed", "bf16-kahan", "bf16", "fp32")


def resolve_precision(name: str, device: torch.device | str) -> str:
    """`auto` -> bf16-mixed on CUDA, fp32 elsewhere; other names are returned checked."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; valid: {', '.join(PRECISIONS)}")
    if name == "auto":
        return "bf16-mixed" if torch.device(device).type == "cuda" else "fp32"
    return name


def weight_dtype(precision: str, train: bool, frozen: bool = False) -> torch.dtype:
    """The dtype to load weights in: master weights when training, the compute dtype otherwise
    (an eval stage only generates, so bf16-mixed loads bfloat16 there). `frozen` weights never
    update (the base under LoRA adapters), so they need no float32 master either: bf16-mixed keeps
    them in bfloat16 and only the adapters in float32 (peft makes them so), which at the 7B shape
    saves 14 GiB of weights and the bfloat16 cast autocast would save of each per forward."""
    if precision == "fp32" or (precision == "bf16-mixed" and train and not frozen):
        return torch.float32
    return torch.bfloat16


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype matrix products run in (and generation reads weights in)."""
    return torch.float32 if precision == "fp32" else torch.bfloat16


def accelerate_mixed_precision(precision: str) -> str:
    """accelerate's `mixed_precision` (TRL's `bf16` flag) for a resolved precision: autocast only
    under bf16-mixed; pure bf16 weights compute in bfloat16 without it."""
    return "bf16" if precision == "bf16-mixed" else "no"


def warn_pure_bf16(precision: str, learning_rate: float, model: torch.nn.Module) -> None:
    """Warn when bfloat16 weights train directly (not a LoRA policy's: peft keeps adapters float32)."""
    if precision == "bf16" and any(p.requires_grad and p.dtype == torch.bfloat16 for p in model.parameters()):
        warnings.warn(f"precision bf16 trains bfloat16 weights directly: AdamW steps of about "
                      f"lr={learning_rate:g} round away on most weights (bfloat16 keeps 8 bits of "
                      f"mantissa); use precision bf16-mixed to keep float32 master weights, or "
                      f"bf16-kahan to keep what rounding drops", stacklevel=2)
