"""The optimizer a precision trains with: AdamW, or under `bf16-kahan` AdamW with Kahan-compensated
bfloat16 weights.

Pure bfloat16 weights lose small updates: a weight near 0.02 resolves steps of 2^-8 of itself
(8e-5), and GRPO's steps are about the learning rate (1e-6), so they round back to the old value.
float32 master weights (`bf16-mixed`) keep them, at 4 more bytes a parameter for the masters, a
float32 gradient and a bfloat16 copy for generation. `KahanAdamW` keeps the weights in bfloat16 and
what each rounding dropped in a bfloat16 compensation buffer (2 bytes a parameter) that is added
back into the next step, so the sum of the updates survives as it would in float32 (Kahan
summation; Zamirai et al. 2020, "Revisiting BFloat16 Training"). The AdamW moments stay float32:
exp_avg_sq's per-step change (1 - beta2 = 1e-3 of itself) is below bfloat16's resolution too.
"""
from __future__ import annotations

import itertools
import warnings
from typing import Iterable

import torch

# Flat chunk of a parameter updated at once: bounds the float32 temporaries (a 7B model's
# embedding has 545M elements; five float32 copies of it would take 11 GB).
CHUNK = 1 << 24
# Parameters from which the update is compiled by default off CUDA: at 32M the compiled step saves
# about 0.3 s a step on a 2-core CPU, so the compile's ~11 s pays back within the first 40 steps.
COMPILE_FROM = 1 << 25


class KahanAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, bias-corrected moments, as `torch.optim.AdamW`) whose
    bfloat16/float16 parameters carry a compensation buffer `state["compensation"]` holding the
    part of each update that rounding to the parameter's dtype dropped. float32 parameters (e.g.
    LoRA adapters peft keeps in float32) step as plain AdamW. Moments are float32 for every
    parameter, also after `load_state_dict`.

    compiled: run each chunk's update through `torch.compile` (one fused kernel instead of about
    fifteen passes over the chunk: a 0.5B model's step took 0.78 s against 5.8 s eager on a 2-core
    CPU, after about 11 s of compiling once per process); None compiles on CUDA and for
    COMPILE_FROM parameters or more, not for the tiny models the CPU recipes train, which would
    spend longer compiling than stepping. A compile that fails warns and steps with the eager ops."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, compiled: bool | None = None):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"KahanAdamW: invalid lr={lr}, betas={betas}, eps={eps} or weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.compiled = compiled
        self._compiled_update = None
        self._numel = sum(p.numel() for group in self.param_groups for p in group["params"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("KahanAdamW does not take sparse gradients")
                self._step_param(p, group)
        return loss

    def _step_param(self, p: torch.Tensor, group: dict) -> None:
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)
            if _narrow(p):
                state["compensation"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = state["step"].item()
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        step_size = lr / (1 - beta1 ** step)
        root_correction = (1 - beta2 ** step) ** 0.5
        decay = 1 - lr * group["weight_decay"]
        comp = state.get("compensation")
        tensors = [p, p.grad, state["exp_avg"], state["exp_avg_sq"]] + ([comp] if comp is not None else [])
        settings = dict(beta1=beta1, beta2=beta2, eps=group["eps"], step_size=step_size,
                        root_correction=root_correction, decay=decay)
        for chunk in zip(*(t.view(-1).split(CHUNK) for t in tensors)):
            self._apply(chunk, settings)

    def _apply(self, chunk: tuple, settings: dict) -> None:
        compiled = self.compiled if self.compiled is not None else chunk[0].is_cuda or self._numel >= COMPILE_FROM
        if not compiled:
            _update(*chunk, **settings)
            return
        if self._compiled_update is None:
            # dynamic: one graph for every chunk length; the float settings change each step
            # without recompiling (dynamo turns them into inputs after the first call).
            # emulate_precision_casts: inductor computes bfloat16 values in float32 inside a kernel
            # and would read the unrounded weight back, so the compensation would come out zero
            self._compiled_update = torch.compile(_update, dynamic=True, options={"emulate_precision_casts": True})
        try:
            self._compiled_update(*chunk, **settings)
        except Exception as e:  # noqa: BLE001 -- a toolchain failure: the eager ops do the same update
            warnings.warn(f"KahanAdamW: the compiled update failed ({type(e).__name__}: {str(e)[:200]}); "
                          "stepping with eager ops", stacklevel=3)
            self.compiled = False
            _update(*chunk, **settings)

    def load_state_dict(self, state_dict: dict) -> None:
        """As torch's, except that the moments stay float32 (torch casts every floating state to
        its parameter's dtype, which would round them to bfloat16) and the step count on the CPU."""
        moments = {i: {k: v[k] for k in ("exp_avg", "exp_avg_sq") if k in v} for i, v in state_dict["state"].items()}
        super().load_state_dict(state_dict)
        saved_ids = itertools.chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = itertools.chain.from_iterable(g["params"] for g in self.param_groups)
        for i, p in zip(saved_ids, params):
            for k, v in moments.get(i, {}).items():
                self.state[p][k] = v.to(device=p.device, dtype=torch.float32)
        for state in self.state.values():  # a step loaded onto the GPU would sync at every .item()
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(device="cpu", dtype=torch.float32)


def _narrow(p: torch.Tensor) -> bool:
    return p.dtype in (torch.bfloat16, torch.float16)


def _update(p, grad, exp_avg, exp_avg_sq, comp=None, *, beta1, beta2, eps, step_size, root_correction, decay):
    """One AdamW update of a flat chunk; with `comp`, Kahan-compensated rounding into `p`."""
    g = grad.float()
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = exp_avg_sq.sqrt().div_(root_correction).add_(eps)
    if comp is None:
        p.mul_(decay).addcdiv_(exp_avg, denom, value=-step_size)
        return
    old = p.float()
    # the update in float32 plus what earlier roundings dropped; p takes the nearest bf16 value
    delta = torch.addcdiv(old * (decay - 1), exp_avg, denom, value=-step_size).add_(comp)
    p.copy_(old + delta)
    comp.copy_(delta - (p.float() - old))  # what this rounding dropped, kept for the next step


def make_optimizer(params: list, precision: str, *, lr: float, weight_decay: float,
                   betas: tuple[float, float]) -> torch.optim.Optimizer:
    """`KahanAdamW` under `bf16-kahan`, `torch.optim.AdamW` otherwise."""
    cls = KahanAdamW if precision == "bf16-kahan" else torch.optim.AdamW
    return cls(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas))
