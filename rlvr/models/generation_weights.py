"""What the rollout engine reads while a policy trains: the policy itself, or a frozen copy kept
up to date before each rollout (`rlvr.models.precision` says which precision needs one)."""
from __future__ import annotations

import torch

from rlvr.models.copies import frozen_copy, pack_sibling_linears
from rlvr.models.merged_lora import MergedLoRACopy, mergeable


class GenerationWeights:
    """What the rollout engine reads: the model itself, under bf16-mixed a bfloat16 copy of float32
    master weights, or for a LoRA policy a plain copy with the adapters merged
    (`rlvr.models.merged_lora`). The copy's tensors keep their storage across `refresh`, so a CUDA
    graph captured on them sees every update."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype | None, merge_lora: bool = False):
        """`dtype` None: generate from `model` itself under autocast (sharded parameters, which
        only the engine's gather makes whole, cannot be copied). `merge_lora`: a LoRA policy
        generates from a merged copy in `dtype` when its adapters are plain LoRA on nn.Linear."""
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
