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

import functools
import itertools
import warnings
from typing import Iterable

import torch

from rlvr.kernels import _triton_usable

# Flat chunk of a parameter updated at once: bounds the float32 temporaries (a 7B model's
# embedding has 545M elements; five float32 copies of it would take 11 GB).
CHUNK = 1 << 24
# Parameters from which the update is compiled by default on the CPU: at 32M the compiled step saves
# about 0.3 s a step on a 2-core CPU, so the compile's ~11 s pays back within the first 40 steps.
COMPILE_FROM = 1 << 25
UPDATES = ("eager", "compiled", "triton")
"""How KahanAdamW applies its update: torch's elementwise ops (the reference), those ops compiled
into one kernel per chunk, or one Triton launch per parameter (CUDA)."""


class KahanAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, bias-corrected moments, as `torch.optim.AdamW`) whose
    bfloat16/float16 parameters carry a compensation buffer `state["compensation"]` holding the
    part of each update that rounding to the parameter's dtype dropped. float32 parameters (e.g.
    LoRA adapters peft keeps in float32) step as plain AdamW. Moments are float32 for every
    parameter, also after `load_state_dict`.

    update: one of UPDATES, or None for the default: `triton` for CUDA parameters (one pass over
    each parameter where the torch ops make about fifteen: on an H200 a 0.5B model's step took 78 ms
    with the torch ops and 118 ms with the compiled chunks, against 11 ms for torch's AdamW),
    `compiled` on the CPU from COMPILE_FROM parameters (a 0.5B model's step took 0.78 s against
    5.8 s eager on a 2-core CPU, after about 11 s of compiling once per process), `eager` for the
    tiny models the CPU recipes train. A compiled or Triton
    update that fails warns and steps with the eager ops from then on."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, update: str | None = None):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"KahanAdamW: invalid lr={lr}, betas={betas}, eps={eps} or weight_decay={weight_decay}")
        if update is not None and update not in UPDATES:
            raise ValueError(f"KahanAdamW: unknown update {update!r}; valid: {', '.join(UPDATES)}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.update = update
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

    def update_for(self, p: torch.Tensor) -> str:
        """The update `p` steps with: the chosen one, else the default for its device and the model's size."""
        if self.update is not None:
            return self.update
        if _triton_usable_on(p.device.type):
            return "triton"
        return "compiled" if self._numel >= COMPILE_FROM else "eager"

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
        comp = state.get("compensation")
        tensors = [p, p.grad, state["exp_avg"], state["exp_avg_sq"]] + ([comp] if comp is not None else [])
        settings = dict(beta1=beta1, beta2=beta2, eps=group["eps"], step_size=lr / (1 - beta1 ** step),
                        root_correction=(1 - beta2 ** step) ** 0.5, decay=1 - lr * group["weight_decay"])
        if self.update_for(p) == "triton" and self._fused(_triton_update, tensors, settings):
            return
        for chunk in zip(*(t.view(-1).split(CHUNK) for t in tensors)):
            self._apply(chunk, settings)

    def _apply(self, chunk: tuple, settings: dict) -> None:
        if self.update_for(chunk[0]) != "compiled":
            _update(*chunk, **settings)
            return
        if self._compiled_update is None:
            # dynamic: one graph for every chunk length; the per-step settings arrive as tensors
            # emulate_precision_casts: inductor computes bfloat16 values in float32 inside a kernel
            # and would read the unrounded weight back, so the compensation would come out zero
            self._compiled_update = torch.compile(_update, dynamic=True, options={"emulate_precision_casts": True})
        if not self._fused(self._compiled_update, chunk, _as_inputs(settings, chunk[0].device)):
            _update(*chunk, **settings)

    def _fused(self, update, tensors, settings: dict) -> bool:
        """Run a compiled or Triton update; on a toolchain failure warn, switch to the eager ops for
        good and return False (nothing was written: both fail before their kernel runs)."""
        try:
            update(*tensors, **settings)
            return True
        except Exception as e:  # noqa: BLE001 -- a toolchain failure: the eager ops do the same update
            warnings.warn(f"KahanAdamW: the {self.update_for(tensors[0])} update failed "
                          f"({type(e).__name__}: {str(e)[:200]}); stepping with eager ops", stacklevel=4)
            self.update = "eager"
            return False

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


@functools.lru_cache(maxsize=None)
def _triton_usable_on(device_type: str) -> bool:
    """rlvr.kernels' check (CUDA, triton installed), asked once per device type: it looks for
    packages on disk, and the default update is chosen for every parameter at every step."""
    return _triton_usable(torch.device(device_type), "triton_kahan_adamw")


def _triton_update(*tensors, **settings) -> None:
    from rlvr.kernels.triton_kahan_adamw import kahan_adamw_update  # imports triton: CUDA only
    kahan_adamw_update(*tensors, **settings)


def _update(p, grad, exp_avg, exp_avg_sq, comp=None, *, beta1, beta2, eps, step_size, root_correction, decay,
            decay_minus_one=None):
    """One AdamW update of a flat chunk; with `comp`, Kahan-compensated rounding into `p`. The
    per-step settings are floats (eager) or 0-d float32 tensors (compiled: `_as_inputs`, which also
    passes decay - 1 formed in double: float32 would round 1 - lr * weight_decay to 1)."""
    g = grad.float()
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = exp_avg_sq.sqrt().div_(root_correction).add_(eps)
    if comp is None:
        _add_scaled_quotient_(p.mul_(decay), exp_avg, denom, step_size)
        return
    old = p.float()
    # the update in float32 plus what earlier roundings dropped; p takes the nearest bf16 value
    shrink = decay - 1 if decay_minus_one is None else decay_minus_one
    delta = _add_scaled_quotient_(old * shrink, exp_avg, denom, step_size).add_(comp)
    p.copy_(old + delta)
    comp.copy_(delta - (p.float() - old))  # what this rounding dropped, kept for the next step


def _add_scaled_quotient_(x: torch.Tensor, num: torch.Tensor, den: torch.Tensor, step_size) -> torch.Tensor:
    """x -= step_size * num / den in place: addcdiv_, or its ops for a tensor step size (addcdiv's
    `value` must be a number)."""
    if isinstance(step_size, torch.Tensor):
        return x.add_(num / den * -step_size)
    return x.addcdiv_(num, den, value=-step_size)


def _as_inputs(settings: dict, device: torch.device) -> dict:
    """The settings that change with the step as 0-d float32 tensors: a compiled update reads them
    as inputs. As floats, dynamo guards on their values (on CUDA: addcdiv's `value` must be a
    number), so every step recompiled until the recompile limit left the eager ops running."""
    per_step = dict(settings, decay_minus_one=settings["decay"] - 1)
    keys = ("step_size", "root_correction", "decay", "decay_minus_one")
    return {k: torch.tensor(v, dtype=torch.float32, device=device) if k in keys else v for k, v in per_step.items()}


def make_optimizer(params: list, precision: str, *, lr: float, weight_decay: float,
                   betas: tuple[float, float]) -> torch.optim.Optimizer:
    """`KahanAdamW` under `bf16-kahan`, `torch.optim.AdamW` otherwise."""
    cls = KahanAdamW if precision == "bf16-kahan" else torch.optim.AdamW
    return cls(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas))
