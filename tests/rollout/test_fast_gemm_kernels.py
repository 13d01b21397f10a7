"""The fast engine's norm-fused GEMM kernels equal the torch ops they replace (HF Qwen2/Llama
numerics, op by op) on odd shapes: rows over one tile and not a multiple of it, hidden size and
MLP width not multiples of the blocks, q/k/v bias and none, the first layer (no residual delta).

GPU tests (bf16: within a few bf16 ulps of the torch ops, which round at the same places but sum
in a different order). The same checks pass in fp32 under the Triton CPU interpreter
(`TRITON_INTERPRET=1`), which is how they were written without a GPU.
"""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

N, H, HEADS, KV, D, INTER, S = 70, 160, 5, 1, 32, 200, 40


def _rmsnorm(x, weight, eps):  # transformers' Qwen2RMSNorm / LlamaRMSNorm
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


def _rope(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x.float() * cos.float() + rotated.float() * sin.float()).to(x.dtype)


def _linear(n_in, n_out, bias, device, dtype, gen):
    layer = torch.nn.Linear(n_in, n_out, bias=bias, device=device, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n_out, n_in, generator=gen, device=device) / n_in ** 0.5)
        if bias:
            layer.bias.copy_(torch.randn(n_out, generator=gen, device=device) * 0.1)
    return layer


def _close(out, ref, dtype):
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_delta", [True, False])
def test_norm_qkv_rope_cache_equals_torch(bias, with_delta, device="cuda", dtype=torch.bfloat16):
    from rlvr.rollout.fast_kernels import norm_qkv_rope_cache_

    gen = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(N, H, generator=gen, device=device).to(dtype)
    delta = torch.randn(N, H, generator=gen, device=device).to(dtype) if with_delta else None
    norm_w = (1 + 0.1 * torch.randn(H, generator=gen, device=device)).to(dtype)
    q_proj, k_proj, v_proj = (_linear(H, out, bias, device, dtype, gen) for out in (HEADS * D, KV * D, KV * D))
    angle = torch.rand(N, D // 2, generator=gen, device=device) * 6
    cos, sin = torch.cat((angle.cos(), angle.cos()), 1).to(dtype), torch.cat((angle.sin(), angle.sin()), 1).to(dtype)
    k_cache = torch.zeros(N, KV, S, D, device=device, dtype=dtype)
    v_cache = torch.zeros_like(k_cache)
    col = torch.tensor([S - 3], device=device)
    x_out = torch.full_like(x, 7.0)

    q = norm_qkv_rope_cache_(x, delta, x_out, norm_w, 1e-6, q_proj, k_proj, v_proj, cos, sin, k_cache, v_cache, col)

    stream = x if delta is None else (x.float() + delta.float()).to(dtype)
    if with_delta:
        assert torch.equal(x_out, stream)
    else:
        assert (x_out == 7.0).all()  # nothing to write on the first layer
    h = _rmsnorm(stream, norm_w, 1e-6)
    c, s_ = cos[:, None], sin[:, None]
    _close(q, _rope(q_proj(h).view(N, HEADS, D), c, s_), dtype)
    _close(k_cache[:, :, S - 3], _rope(k_proj(h).view(N, KV, D), c, s_), dtype)
    _close(v_cache[:, :, S - 3], v_proj(h).view(N, KV, D), dtype)
    other = torch.ones(S, dtype=torch.bool)
    other[S - 3] = False
    assert (k_cache[:, :, other] == 0).all() and (v_cache[:, :, other] == 0).all()


@pytest.mark.parametrize("with_delta", [True, False])
def test_norm_gate_up_silu_equals_torch(with_delta, device="cuda", dtype=torch.bfloat16):
    from rlvr.rollout.fast_kernels import norm_gate_up_silu

    gen = torch.Generator(device=device).manual_seed(2)
    x = torch.randn(N, H, generator=gen, device=device).to(dtype)
    delta = torch.randn(N, H, generator=gen, device=device).to(dtype) if with_delta else None
    norm_w = (1 + 0.1 * torch.randn(H, generator=gen, device=device)).to(dtype)
    gate, up = _linear(H, INTER, False, device, dtype, gen), _linear(H, INTER, False, device, dtype, gen)
    x_out = torch.full_like(x, 7.0)

    act = norm_gate_up_silu(x, delta, x_out, norm_w, 1e-6, gate, up)

    stream = x if delta is None else (x.float() + delta.float()).to(dtype)
    if with_delta:
        assert torch.equal(x_out, stream)
    h = _rmsnorm(stream, norm_w, 1e-6)
    _close(act, torch.nn.functional.silu(gate(h)) * up(h), dtype)
