"""KahanAdamW's Triton update steps as its torch ops: weights, compensation and moments after many
steps, bfloat16 and float32 parameters, sizes that end mid-block, weight decay on and off, and a
resumed optimizer. `gpu` tests (Triton); they pass under the Triton CPU interpreter
(`TRITON_INTERPRET=1`, CPU tensors), which is how they were written without a GPU.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch

from rlvr.trainer.optimizer import KahanAdamW

pytestmark = pytest.mark.gpu
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"


def _run(update: str, dtype, sizes, steps: int, **settings):
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter((torch.randn(n, generator=gen) * 0.02).to(DEVICE, dtype)) for n in sizes]
    bias = [torch.randn(n, generator=gen) for n in sizes]  # a steady direction under the noise
    grads = [[(b + 0.5 * torch.randn(b.shape, generator=gen)).to(DEVICE, dtype) for b in bias] for _ in range(steps)]
    opt = KahanAdamW(params, update=update, **{**dict(lr=1e-5, weight_decay=0.01), **settings})
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g
        opt.step()
    return params, opt


def _assert_same_trajectory(params_a, opt_a, params_b, opt_b):
    for a, b in zip(params_a, params_b):
        sa, sb = opt_a.state[a], opt_b.state[b]
        for key in ("exp_avg", "exp_avg_sq"):
            # the torch ops on the CPU contract lerp into a fused multiply-add: float32 rounding apart
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-5, atol=1e-7)
        if "compensation" not in sa:
            torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-9)
            continue
        # float32 rounding apart (above) can round a weight to the neighbouring bf16 value; then the
        # compensation holds that step (about 1e-4 at these weights) and rounds at 2^-9 of it:
        # weight + compensation agree to that, and the bf16 weights themselves almost all equal
        effective = [p.detach().float() + s["compensation"].float() for p, s in ((a, sa), (b, sb))]
        torch.testing.assert_close(effective[0], effective[1], rtol=0, atol=2.5e-7)
        assert (effective[0] - effective[1]).abs().mean() < 1e-9
        assert (a.detach() == b.detach()).float().mean() > 0.99


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_the_triton_update_steps_as_the_torch_ops(dtype, weight_decay):
    sizes = (1, 2047, 5000)  # one element, just under a block, past two blocks
    eager = _run("eager", dtype, sizes, 30, weight_decay=weight_decay)
    fused = _run("triton", dtype, sizes, 30, weight_decay=weight_decay)
    assert fused[1].update == "triton"  # no fallback to the torch ops
    _assert_same_trajectory(*eager, *fused)
    moved = [(p.detach().float() - q.detach().float()).abs().max() for p, q in zip(fused[0], _run("eager", dtype, sizes, 0)[0])]
    assert all(m > 0 for m in moved)


def test_small_steps_survive_in_the_compensation():
    """lr 1e-7 on weights near 0.02: each step is far below a bf16 step of the weight, so the
    weight itself barely moves and the compensation carries the sum."""
    (p,), opt = _run("triton", torch.bfloat16, (4096,), 20, lr=1e-7, weight_decay=0.0)
    comp = opt.state[p]["compensation"].float()
    assert comp.abs().mean() > 1e-7  # the dropped updates are kept, not lost


def test_a_resumed_optimizer_continues_bit_for_bit():
    (p,), opt = _run("triton", torch.bfloat16, (3000,), 5)
    q = torch.nn.Parameter(p.detach().clone())
    resumed = KahanAdamW([q], update="triton", lr=1e-5, weight_decay=0.01)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))  # as a checkpoint holds it
    gen = torch.Generator().manual_seed(7)
    for _ in range(5):
        g = torch.randn(3000, generator=gen).to(DEVICE, torch.bfloat16)
        p.grad, q.grad = g, g.clone()
        opt.step()
        resumed.step()
    assert torch.equal(p.detach(), q.detach())
    assert torch.equal(opt.state[p]["compensation"], resumed.state[q]["compensation"])


def test_non_contiguous_tensors_are_refused_and_the_optimizer_falls_back_to_the_torch_ops():
    from rlvr.kernels.triton_kahan_adamw import kahan_adamw_update

    p = torch.zeros(4, 4, device=DEVICE, dtype=torch.bfloat16).t()
    m = torch.zeros(4, 4, device=DEVICE)
    with pytest.raises(ValueError, match="contiguous"):
        kahan_adamw_update(p, p, m, m, p, beta1=0.9, beta2=0.999, eps=1e-8, step_size=1e-3,
                           root_correction=1.0, decay=1.0)
