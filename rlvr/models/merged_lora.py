"""A LoRA policy's generation copy with the adapters merged into its projections.

peft computes an adapted projection as W x + s * B (A x): two more GEMMs and two elementwise ops for
each of up to seven projections a layer, which a decode step pays on every token, at a few
microseconds a kernel, and the engine cannot stack or fuse peft's projections. This copy is a plain
model whose adapted weights hold W + s * B A in the generation dtype, recomputed in place before
each rollout, so the engine runs the kernels of a fully fine-tuned model (stacked projections,
fused GEMMs). It costs one copy of the adapted weights; every other parameter (embeddings, norms,
head, biases) is shared when it already has the generation dtype.
"""
from __future__ import annotations

import torch

from rlvr.models.copies import frozen_copy, pack_sibling_linears


def lora_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Module name -> peft LoRA layer, for every adapted module of `model`."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def mergeable(model: torch.nn.Module) -> bool:
    """Plain LoRA on nn.Linear (one active adapter, no DoRA or other variant, no adapter bias, not
    merged already): what `MergedLoRACopy` merges. Anything else generates through peft."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = lora_layers(base)
    return bool(layers) and all(_plain(layer, LoraLinear) for layer in layers.values())


def _plain(layer, lora_linear_cls) -> bool:
    if type(layer) is not lora_linear_cls or type(layer.base_layer) is not torch.nn.Linear:
        return False
    if layer.merged or layer.disable_adapters or layer.fan_in_fan_out or len(layer.active_adapters) != 1:
        return False
    name = layer.active_adapters[0]
    variant = getattr(layer, "lora_variant", {}).get(name) or getattr(layer, "use_dora", {}).get(name)
    return not variant and layer.lora_B[name].bias is None


class MergedLoRACopy:
    """`model`: a plain eval-mode copy of a peft LoRA policy's base in `dtype`, adapters merged
    (`refresh` recomputes them from the policy's current adapters, in the same storage, so a CUDA
    graph captured on the copy sees every update)."""

    def __init__(self, peft_model: torch.nn.Module, dtype: torch.dtype):
        if not mergeable(peft_model):
            raise ValueError("MergedLoRACopy needs plain LoRA on nn.Linear layers (see merged_lora.mergeable)")
        base = peft_model.get_base_model()
        self.model = frozen_copy(base, dtype)
        sources = lora_layers(base)
        self._merges = []  # (merged weight of the copy, the policy's LoRA layer)
        for name, copied in lora_layers(self.model).items():
            linear = _linear_like(copied.base_layer, dtype)
            self.model.set_submodule(name, linear)
            self._merges.append((linear.weight, sources[name]))
        # the engine's stacked q/k/v and gate/up become views of the merged weights, not copies
        pack_sibling_linears(self.model, owned={id(weight) for weight, _ in self._merges})
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """W + s * B A for every adapted projection, summed in float32 and rounded once into the copy."""
        for weight, layer in self._merges:
            name = layer.active_adapters[0]
            a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
            merged = torch.addmm(layer.base_layer.weight.float(), b.float(), a.float(), alpha=layer.scaling[name])
            weight.copy_(merged)


def _linear_like(base_layer: torch.nn.Linear, dtype: torch.dtype) -> torch.nn.Linear:
    """A frozen eval-mode nn.Linear of `base_layer`'s shape with its own weight (filled by
    `refresh`) and `base_layer`'s bias (frozen_copy already shared or cast it)."""
    weight = base_layer.weight
    linear = torch.nn.utils.skip_init(torch.nn.Linear, weight.shape[1], weight.shape[0], bias=False,
                                      device=weight.device, dtype=dtype)
    linear.weight.requires_grad_(False)
    linear.bias = base_layer.bias
    return linear.eval()
