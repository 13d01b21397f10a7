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

import copy
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


def warn_pure_bf16(precision: str, learning_rate: float) -> None:
    if precision == "bf16":
        warnings.warn(f"precision bf16 trains bfloat16 weights directly: AdamW steps of about "
                      f"lr={learning_rate:g} round away on most weights (bfloat16 keeps 8 bits of "
                      f"mantissa); use precision bf16-mixed to keep float32 master weights, or "
                      f"bf16-kahan to keep what rounding drops", stacklevel=2)


class GenerationWeights:
    """What the rollout engine reads: the model itself, under bf16-mixed a bfloat16 copy of float32
    master weights, or for a LoRA policy a plain copy with the adapters merged
    (`rlvr.models.merged_lora`). The copy's tensors keep their storage across `refresh`, so a CUDA
    graph captured on them sees every update."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype | None, merge_lora: bool = False):
        """`dtype` None: generate from `model` itself under autocast (sharded parameters, which
        only the engine's gather makes whole, cannot be copied). `merge_lora`: a LoRA policy
        generates from a merged copy in `dtype` when its adapters are plain LoRA on nn.Linear."""
        from rlvr.models.merged_lora import MergedLoRACopy, mergeable
        from rlvr.models.packed_layout import pack_sibling_linears

        self.source = model
        self.needs_autocast = dtype is None
        self._merged = None
        if dtype is not None and merge_lora and mergeable(model):
            self._merged = MergedLoRACopy(model, dtype)
            self.model, self._pairs = self._merged.model, []
            return
        masters = list(model.parameters())
        floats = [p for p in masters if p.is_floating_point()]
        # Already in the generation dtype, or narrower (a wider copy would only be slower).
        if dtype is None or all(p.dtype == dtype or p.dtype.itemsize < dtype.itemsize for p in floats):
            self.model, self._pairs = model, []
            return
        self.model = frozen_copy(model, dtype)
        self._pairs = [(c, m) for c, m in zip(self.model.parameters(), masters) if c is not m]
        # the engine's stacked q/k/v and gate/up become views of the copy instead of copies of it
        pack_sibling_linears(self.model, owned={id(c) for c, _ in self._pairs})

    @property
    def is_copy(self) -> bool:
        return self.model is not self.source

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy (and round) the master weights into the generation copy, or merge the adapters
        again; a no-op without a copy."""
        if self._merged is not None:
            self._merged.refresh()
        if self._pairs:
            copies, masters = zip(*self._pairs)
            torch._foreach_copy_(list(copies), list(masters))


def frozen_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A frozen eval-mode copy whose floating parameters are `dtype`. Buffers keep their dtype
    (RoPE's inv_freq stays float32, as when a model is loaded in bfloat16). Parameters that are
    frozen and already `dtype` are shared, not copied: a LoRA policy's copy holds its adapters
    alone, not a second base model."""
    shared = {id(p): p for p in model.parameters() if not p.requires_grad and p.dtype == dtype}
    clone = copy.deepcopy(model, memo=dict(shared)).eval()
    # accelerate's prepare wraps forward in autocast (an instance attribute): the copy computes
    # in its own dtype, so it gets the class forward back
    if "_original_forward" in clone.__dict__:
        del clone.__dict__["_original_forward"]
        clone.__dict__.pop("forward", None)
    for p in clone.parameters():
        if id(p) in shared:
            continue
        p.requires_grad_(False)
        if p.is_floating_point():
            p.data = p.data.to(dtype)
    return clone
