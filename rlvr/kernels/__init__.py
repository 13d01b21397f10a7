"""The fused path: rewards -> group advantages -> per-token policy loss from hidden states and
the lm_head weight, never materialising (N, T, V) logits.

Two backends with one signature: `torch` (rlvr.kernels.reference, any device, the CPU path and
the tests' oracle) and `triton` (rlvr.kernels.triton_loss / triton_advantages, CUDA). `auto`
picks triton for CUDA tensors when triton and the triton modules are importable, else torch.
The triton modules are imported lazily, so importing rlvr.kernels never needs triton.
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

import torch

from rlvr.algorithms.advantages import group_advantages as _torch_group_advantages

from . import reference

BACKENDS = ("auto", "torch", "triton")


def fused_policy_loss(hidden, weight, targets, mask, advantages, old_logp=None, ref_logp=None,
                      *, backend: str = "auto", **kwargs):
    """See `reference.fused_policy_loss` for the arguments; `backend` is auto, torch or triton."""
    module = _loss_module(backend, hidden.device)
    return module.fused_policy_loss(hidden, weight, targets, mask, advantages, old_logp, ref_logp, **kwargs)


def token_logprobs(hidden, weight, targets, *, backend: str = "auto", **kwargs):
    """See `reference.token_logprobs`: (logp (N, T), entropy (N, T)), no grad."""
    module = _loss_module(backend, hidden.device)
    return module.token_logprobs(hidden, weight, targets, **kwargs)


def group_advantages(rewards: torch.Tensor, group_size: int, kind: str = "grpo", *,
                     backend: str = "auto", **options) -> torch.Tensor:
    """Advantages (N,) for rewards (N,) in contiguous groups of `group_size` (no metrics).

    `auto` uses the triton kernel for CUDA tensors and the kinds it implements (its `KINDS`),
    torch otherwise; `triton` insists on the kernel.
    """
    _check_backend(backend)
    if backend == "triton" or (backend == "auto" and _triton_usable(rewards.device, "triton_advantages")):
        module = _import_triton_module("triton_advantages", rewards.device)
        if backend == "triton" or kind in module.KINDS:
            return module.group_advantages(kind, rewards, group_size, **options)
    return _torch_group_advantages(kind, rewards, group_size, **options)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernels backend {backend!r}; valid: {', '.join(BACKENDS)}")


def _loss_module(backend: str, device: torch.device) -> ModuleType:
    _check_backend(backend)
    if backend == "torch" or (backend == "auto" and not _triton_usable(device, "triton_loss")):
        return reference
    return _import_triton_module("triton_loss", device)


def _triton_usable(device: torch.device, module: str) -> bool:
    """CUDA tensors, triton installed and our triton module present (its import errors are not hidden)."""
    return (
        device.type == "cuda"
        and importlib.util.find_spec("triton") is not None
        and importlib.util.find_spec(f"{__name__}.{module}") is not None
    )


def _import_triton_module(module: str, device: torch.device) -> ModuleType:
    if device.type != "cuda":
        raise ValueError(f"kernels backend 'triton' needs CUDA tensors, got device {device}")
    if importlib.util.find_spec("triton") is None:
        raise ImportError("kernels backend 'triton' needs the triton package (pip install 'rlvr[gpu]')")
    return importlib.import_module(f"{__name__}.{module}")


__all__ = ["BACKENDS", "fused_policy_loss", "group_advantages", "reference", "token_logprobs"]
