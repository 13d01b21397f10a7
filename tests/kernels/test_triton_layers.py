"""Fused RMSNorm / SwiGLU / RoPE (rlvr.kernels.triton_layers): the torch references are HF's own
modules and function op for op (CPU); the Triton kernels equal the references in value and gradient
(GPU; the RoPE kernel also under the Triton CPU interpreter); patching a model changes no parameter,
state_dict key, loss or gradient."""
from __future__ import annotations

import copy
import importlib
import os

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from rlvr.kernels import triton_layers as layers

ARCHS = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}
LAYERS = 2
PATCHABLE = 2 * LAYERS + 1 + LAYERS  # two norms per layer, the final norm, one MLP per layer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def tiny_model(arch: str = "qwen2", device: str = "cpu", dtype=torch.float32, seed: int = 0):
    config_cls, model_cls = ARCHS[arch]
    torch.manual_seed(seed)
    cfg = config_cls(vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=LAYERS,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = model_cls(cfg)
    with torch.no_grad():  # norms start at ones; perturb them so their gradients are not symmetric
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.2 * torch.randn_like(param))
    return model.to(device=device, dtype=dtype)


def loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_close_scaled(actual, expected, tol):
    """Elementwise within tol relative to the tensor's scale (bf16 grads of near-zero entries)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    scale = expected.float().abs().max().clamp(min=1e-6).item()
    torch.testing.assert_close(actual.float(), expected.float(), atol=tol * scale, rtol=tol)


# ----------------------------------------------------------------------------- CPU: references are HF

@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_reference_is_the_hf_module(arch, dtype):
    norm = tiny_model(arch, dtype=dtype).model.layers[0].input_layernorm
    x = torch.randn(3, 5, 48, dtype=dtype, requires_grad=True)
    dy = torch.randn(3, 5, 48, dtype=dtype)
    ours = layers.rms_norm_reference(x, norm.weight, norm.variance_epsilon)
    theirs = norm(x)
    assert torch.equal(ours, theirs)
    assert all(torch.equal(a, b) for a, b in zip(torch.autograd.grad(ours, (x, norm.weight), dy),
                                                  torch.autograd.grad(theirs, (x, norm.weight), dy)))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swiglu_reference_is_the_hf_mlp(arch, dtype):
    mlp = tiny_model(arch, dtype=dtype).model.layers[0].mlp
    x = torch.randn(3, 5, 48, dtype=dtype, requires_grad=True)
    ours = mlp.down_proj(layers.swiglu_reference(mlp.gate_proj(x), mlp.up_proj(x)))
    theirs = mlp(x)
    assert torch.equal(ours, theirs)
    inputs = (x, *mlp.parameters())
    dy = torch.randn_like(ours)
    assert all(torch.equal(a, b) for a, b in zip(torch.autograd.grad(ours, inputs, dy),
                                                  torch.autograd.grad(theirs, inputs, dy)))


# ----------------------------------------------------------------------------- CPU: patching

def test_patch_for_training_patches_nothing_on_cpu():
    model = tiny_model()
    assert layers.patch_for_training(model) == 0
    assert not any("forward" in module.__dict__ for module in model.modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_patch_modules_keeps_parameters_loss_and_grads_and_unpatches(arch):
    model = tiny_model(arch)
    ids = torch.randint(0, 96, (2, 9))
    keys, params = list(model.state_dict()), [p.data_ptr() for p in model.parameters()]
    loss, grads = loss_and_grads(model, ids)

    assert layers.patch_modules(model) == PATCHABLE
    assert layers.patch_modules(model) == 0  # idempotent
    assert type(model.model.norm).__name__.endswith("RMSNorm") and "forward" in model.model.norm.__dict__
    assert "forward" in model.model.layers[1].mlp.__dict__
    assert list(model.state_dict()) == keys and [p.data_ptr() for p in model.parameters()] == params
    patched_loss, patched_grads = loss_and_grads(model, ids)  # off CUDA the patched forwards run the references
    assert torch.equal(patched_loss, loss)
    assert patched_grads.keys() == grads.keys() and all(torch.equal(patched_grads[k], grads[k]) for k in grads)

    modeling = importlib.import_module(type(model).__module__)
    assert modeling.apply_rotary_pos_emb is layers.rotary  # looked up there by the attention forward

    assert layers.unpatch(model) == PATCHABLE
    assert not any("forward" in module.__dict__ for module in model.modules())
    assert modeling.apply_rotary_pos_emb is not layers.rotary
    assert layers.patch_modules(model) == PATCHABLE  # patchable again after unpatch
    layers.unpatch(model)


def test_patch_modules_sees_through_lora():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules=["gate_proj", "up_proj", "down_proj"]))
    assert layers.patch_modules(model) == PATCHABLE
    assert "lora" in type(model.base_model.model.model.layers[0].mlp.gate_proj).__module__


def test_unsupported_model_types_are_left_alone():
    # Olmo2's RMSNorm rounds after the weight multiply, not before: not Llama's numerics
    from transformers import Olmo2Config, Olmo2ForCausalLM

    cfg = Olmo2Config(vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2)
    assert layers.patch_modules(Olmo2ForCausalLM(cfg)) == 0


@pytest.mark.parametrize("arch", ARCHS)
def test_rotary_reference_is_the_hf_function(arch):
    modeling = importlib.import_module(ARCHS[arch][1].__module__)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 7, 16, generator=g), torch.randn(2, 2, 7, 16, generator=g)
    cos, sin = torch.randn(2, 7, 16, generator=g), torch.randn(2, 7, 16, generator=g)
    for ours, theirs in zip(layers.rotary_reference(q, k, cos, sin), modeling.apply_rotary_pos_emb(q, k, cos, sin)):
        assert torch.equal(ours, theirs)


# ----------------------------------------------------------------------------- GPU: kernels vs references

TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype,weight_dtype", [
    (torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
    (torch.bfloat16, torch.float32),  # an fp32 master weight under autocast: fp32 output, as HF
])
@pytest.mark.parametrize("shape", [(3, 37, 896), (3, 37, 100), (3, 37, 4864), (1111, 896), (1, 100), (0, 896)])
def test_triton_rms_norm_matches_reference(shape, dtype, weight_dtype):
    torch.manual_seed(0)
    x = torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True)
    weight = (1 + 0.2 * torch.randn(shape[-1], device="cuda")).to(weight_dtype).requires_grad_()
    ours = layers.RMSNormFunction.apply(x, weight, 1e-6)
    expected = layers.rms_norm_reference(x, weight, 1e-6)
    assert ours.dtype == expected.dtype == torch.promote_types(dtype, weight_dtype)
    if not x.numel():
        assert ours.shape == expected.shape
        return
    assert_close_scaled(ours, expected, TOL[dtype])
    dy = torch.randn_like(ours)
    dx, dw = torch.autograd.grad(ours, (x, weight), dy)
    ref_dx, ref_dw = torch.autograd.grad(expected, (x, weight), dy)
    assert_close_scaled(dx, ref_dx, TOL[dtype])
    assert_close_scaled(dw, ref_dw, TOL[dtype])
    again = torch.autograd.grad(layers.RMSNormFunction.apply(x, weight, 1e-6), (x, weight), dy)
    assert torch.equal(again[1], dw)  # partial sums, no atomics: deterministic


@pytest.mark.gpu
@cuda
def test_triton_rms_norm_frozen_weight_gets_no_grad():
    x = torch.randn(5, 37, 896, device="cuda", requires_grad=True)
    weight = torch.rand(896, device="cuda")  # frozen (LoRA)
    out = layers.RMSNormFunction.apply(x, weight, 1e-6)
    out.sum().backward()
    assert weight.grad is None
    ref_dx, = torch.autograd.grad(layers.rms_norm_reference(x, weight, 1e-6).sum(), (x,))
    assert_close_scaled(x.grad, ref_dx, TOL[torch.float32])


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 37, 4864), (3, 37, 100), (1000, 896), (7,), (0, 4864)])
def test_triton_swiglu_matches_reference(shape, dtype):
    torch.manual_seed(0)
    gate = (3 * torch.randn(shape, device="cuda")).to(dtype).requires_grad_()
    up = torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True)
    ours = layers.SwiGLUFunction.apply(gate, up)
    expected = layers.swiglu_reference(gate, up)
    assert ours.dtype == dtype and ours.shape == expected.shape
    if not gate.numel():
        return
    assert_close_scaled(ours, expected, TOL[dtype])
    dout = torch.randn_like(ours)
    for got, want in zip(torch.autograd.grad(ours, (gate, up), dout),
                         torch.autograd.grad(expected, (gate, up), dout)):
        assert_close_scaled(got, want, TOL[dtype])


INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
KERNEL_DEVICE = "cpu" if INTERPRETED else "cuda"


@pytest.mark.gpu
@pytest.mark.skipif(not (INTERPRETED or torch.cuda.is_available()), reason="needs CUDA or the Triton interpreter")
@pytest.mark.parametrize("dtype", [torch.float32] if INTERPRETED else [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch,q_heads,k_heads,length,d,cos_batch", [
    (2, 14, 2, 37, 64, 2),  # Qwen2-0.5B heads
    (3, 12, 2, 5, 128, 1),  # Qwen2.5-1.5B heads, cos shared by the batch (positions without padding)
    (1, 4, 4, 1, 16, 1),
])
def test_triton_rotary_matches_reference(batch, q_heads, k_heads, length, d, cos_batch, dtype):
    g = torch.Generator().manual_seed(0)
    # as HF's attention: transposed views of the projections' (B, L, heads * D) outputs
    q_proj = torch.randn(batch, length, q_heads * d, generator=g).to(KERNEL_DEVICE, dtype).requires_grad_()
    k_proj = torch.randn(batch, length, k_heads * d, generator=g).to(KERNEL_DEVICE, dtype).requires_grad_()
    q = q_proj.view(batch, length, q_heads, d).transpose(1, 2)
    k = k_proj.view(batch, length, k_heads, d).transpose(1, 2)
    positions = torch.arange(length)[None] + torch.arange(cos_batch)[:, None] * 3
    freqs = positions[..., None].float() / 10000 ** (torch.arange(0, d, 2).float() / d)
    angles = torch.cat((freqs, freqs), dim=-1)
    cos, sin = angles.cos().to(KERNEL_DEVICE, dtype), angles.sin().to(KERNEL_DEVICE, dtype)
    ours = layers.RotaryFunction.apply(q, k, cos, sin)
    expected = layers.rotary_reference(q, k, cos, sin)
    grads_out = [torch.randn(t.shape, generator=g).to(KERNEL_DEVICE, dtype) for t in expected]
    for got, want in zip(ours, expected):
        assert got.shape == want.shape and got.stride() == (q if got.shape[1] == q_heads else k).stride()
        assert_close_scaled(got, want, TOL[dtype])
    for got, want in zip(torch.autograd.grad(ours, (q_proj, k_proj), grads_out),
                         torch.autograd.grad(expected, (q_proj, k_proj), grads_out)):
        assert_close_scaled(got, want, TOL[dtype])


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_patched_model_matches_unpatched(arch, dtype):
    model = tiny_model(arch, device="cuda", dtype=dtype)
    ids = torch.randint(0, 96, (4, 33), device="cuda")
    loss, grads = loss_and_grads(model, ids)  # before patching: RoPE's function is module-wide
    patched = copy.deepcopy(model).cpu()  # as a trainer sees it: loaded on the CPU, moved later
    assert layers.patch_for_training(patched) == 0
    assert layers.patch_for_training(patched, "cuda") == PATCHABLE
    patched.cuda()
    assert layers.patch_for_training(patched) == 0
    patched_loss, patched_grads = loss_and_grads(patched, ids)
    layers.unpatch(patched)
    torch.testing.assert_close(patched_loss, loss, atol=TOL[dtype], rtol=TOL[dtype])
    assert patched_grads.keys() == grads.keys()
    for name, grad in grads.items():
        assert_close_scaled(patched_grads[name], grad, TOL[dtype])
