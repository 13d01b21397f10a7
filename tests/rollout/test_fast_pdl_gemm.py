"""The decode step's Triton GEMMs (`rlvr.rollout.fast_pdl_gemm`) compute what the torch ops they
replace compute, on odd shapes (rows, columns and reduction not multiples of the tiles, one row,
bias and none), with every launch shape; the decode path built on them gives the cuBLAS path's
logits and cache; launched as programmatic dependent launches with the weight prefetch, in a CUDA
graph, their outputs are bit-equal to plain launches; the engine's option picks the path.

`gpu` tests. Those without PDL also pass in fp32 under the Triton CPU interpreter
(`TRITON_INTERPRET=1`, CPU tensors), which is how they were written without a GPU; PDL and the
L2 prefetch are PTX, which the interpreter does not run.
"""
from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.nn.functional as F

from rlvr.models.char_tokenizer import build_char_tokenizer
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.fast import FastEngine, FastEngineConfig

from test_fast import _check_greedy_matches_generate, _check_sampled_logprobs, _model

pytestmark = pytest.mark.gpu

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"
DTYPES = [torch.float32] if INTERPRETED else [torch.float32, torch.bfloat16]

SHAPES = [(1, 48, 64), (5, 100, 160), (70, 200, 200), (64, 1152, 896)]  # (rows, out, in)


def _tilings():
    from rlvr.rollout.fast_pdl_gemm import GemmTiling

    return [None, GemmTiling(16, 16, 32, warps=4, stages=2), GemmTiling(64, 64, 64, warps=8, stages=3),
            GemmTiling(32, 32, 128, warps=4, stages=4), GemmTiling(16, 32, 32, splits=3),  # uneven last split
            GemmTiling(64, 16, 16, splits=8), GemmTiling(64, 32, 256, splits=2, stages=2)]  # the sweep's deep steps


def _close(out, ref, dtype):
    if dtype == torch.float32:
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    else:  # the same roundings, another summation order: a bf16 ulp or two
        torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)


def _inputs(m, n, k, dtype, seed=0):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    x = torch.randn(m, k, generator=gen, device=DEVICE).to(dtype)
    w = (torch.randn(n, k, generator=gen, device=DEVICE) / k ** 0.5).to(dtype)
    b = (torch.randn(n, generator=gen, device=DEVICE) * 0.1).to(dtype)
    return x, w, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_linear_equals_f_linear(shape, dtype):
    from rlvr.rollout.fast_pdl_gemm import linear

    x, w, b = _inputs(*shape, dtype)
    for tiling in _tilings():
        _close(linear(x, w, b, tiling=tiling), F.linear(x, w, b), dtype)
        _close(linear(x, w, tiling=tiling), F.linear(x, w), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_reads_strided_rows(dtype):
    """The attention output and q/k/v slices reach the GEMMs as row-strided views."""
    from rlvr.rollout.fast_pdl_gemm import linear

    x, w, b = _inputs(9, 40, 96, dtype)
    wide = torch.cat([x, x], dim=1)[:, 96:]
    assert wide.stride(0) == 192
    _close(linear(wide, w, b), F.linear(x, w, b), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 40, 64), (70, 100, 160), (64, 300, 96)])
def test_gate_up_silu_equals_the_torch_ops(shape, dtype):
    from rlvr.rollout.fast_pdl_gemm import gate_up_silu

    m, inter, k = shape
    x, w, _ = _inputs(m, 2 * inter, k, dtype)
    gate, up = F.linear(x, w).chunk(2, dim=1)
    ref = F.silu(gate) * up
    for tiling in _tilings():
        _close(gate_up_silu(x, w, tiling=tiling), ref, dtype)


def test_default_tiling_gives_every_sm_a_program():
    from rlvr.rollout.fast_pdl_gemm import MIN_SPLIT_K, default_tiling

    sms = 132  # an H200
    assert default_tiling(64, 1152, 896, sms).splits == 3  # q/k/v of the 0.5B shape: 36 tiles x 3 splits
    assert default_tiling(64, 4864, 896, sms).splits == 1  # its gate/up (pairs of 32 rows): 152 programs
    assert default_tiling(64, 896, 4864, sms).splits == 5  # down_proj: 28 tiles x 5 splits
    assert default_tiling(256, 896, 4864, sms).splits == 1  # 4 row tiles: 112 programs
    tiling = default_tiling(3, 100, 24, sms)
    assert (tiling.block_m, tiling.block_k, tiling.splits) == (16, 32, 1)  # the smallest tl.dot tiles, no split
    for m in (1, 8, 64, 65, 256):
        for n in (16, 896, 9728):
            for k in (64, 896, 8960):
                t = default_tiling(m, n, k, sms)
                assert t.block_m <= 64 and t.block_n in (16, 32) and 1 <= t.splits <= 8
                assert t.splits == 1 or k // t.splits >= MIN_SPLIT_K


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_k_counters_are_left_at_zero_and_launches_repeat_bit_equal(dtype):
    """The tile's last program resets its counter: a second launch (a graph replay) sums right."""
    from rlvr.rollout.fast_pdl_gemm import _COUNTERS, GemmTiling, gate_up_silu, linear

    x, w, b = _inputs(40, 96, 320, dtype)
    tiling = GemmTiling(16, 32, 32, splits=4)
    first = [linear(x, w, b, tiling=tiling), gate_up_silu(x, w, tiling=tiling)]
    assert all(int(c.abs().sum()) == 0 for c in _COUNTERS.values())
    again = [linear(x, w, b, tiling=tiling), gate_up_silu(x, w, tiling=tiling)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    _close(first[0], F.linear(x, w, b), dtype)


def _decode_inputs(model, n, length, seed=0):
    """A decode step's static tensors over a random cache: rows with their own left padding."""
    from rlvr.rollout.fast_forward import ModelParts

    parts = ModelParts.of(model)
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    shape = (n, parts.kv_heads, length, parts.head_dim)
    dtype = model.lm_head.weight.dtype
    k_cache = [torch.randn(shape, generator=gen, device=DEVICE).to(dtype) for _ in parts.layers]
    v_cache = [torch.randn(shape, generator=gen, device=DEVICE).to(dtype) for _ in parts.layers]
    col = torch.tensor([length - 3], device=DEVICE)
    start = torch.tensor([0, 5, 17][:n], device=DEVICE)
    tokens = torch.randint(0, model.config.vocab_size, (n,), generator=gen, device=DEVICE)
    return parts, tokens, col - start, col, start, k_cache, v_cache


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_decode_step_equals_the_cublas_path(arch):
    """`decode_forward_pdl` (Triton GEMMs, SiLU in the gate/up GEMM) against `decode_forward_fused`
    (cuBLAS GEMMs): the same logits and the same new cache column, fp32, without PDL."""
    from rlvr.rollout.fast_forward import decode_forward_fused, decode_forward_pdl, fits_pdl_gemms
    from rlvr.rollout.fast_stacked import StackedProjections

    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, arch=arch, device=DEVICE)
    parts, tokens, pos, col, start, k_cache, v_cache = _decode_inputs(model, 3, 40)
    assert fits_pdl_gemms(parts)
    stacked = StackedProjections(parts)
    k2, v2 = [c.clone() for c in k_cache], [c.clone() for c in v_cache]
    with torch.no_grad():
        ref = decode_forward_fused(parts, tokens, pos, col, start, k_cache, v_cache, stacked)
        out = decode_forward_pdl(parts, tokens, pos, col, start, k2, v2, stacked, pdl=False)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    for a, b in zip(k_cache + v_cache, k2 + v2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_pdl_path_needs_plain_bias_free_o_and_down_projections():
    from peft import LoraConfig, get_peft_model

    from rlvr.rollout.fast_forward import ModelParts, fits_pdl_gemms

    tokenizer = build_char_tokenizer()
    assert fits_pdl_gemms(ModelParts.of(_model(tokenizer)))
    lora = get_peft_model(_model(tokenizer), LoraConfig(r=4, target_modules=["o_proj"]))
    assert not fits_pdl_gemms(ModelParts.of(lora.get_base_model()))
    biased = _model(tokenizer, arch="llama")
    biased.model.layers[1].mlp.down_proj.bias = torch.nn.Parameter(torch.zeros(64))
    assert not fits_pdl_gemms(ModelParts.of(biased))


# ----------------------------------------------------------------------------- on the GPU only

needs_hopper = pytest.mark.skipif(INTERPRETED or not torch.cuda.is_available()
                                  or torch.cuda.get_device_capability()[0] < 9, reason="PDL needs sm_90")


@needs_hopper
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_pdl_launches_with_prefetch_are_bit_equal_in_a_graph(dtype):
    """A chain as the decode step runs it (add + RMSNorm, then GEMMs that prefetch their weight and
    wait on the kernel ahead), captured in a CUDA graph and replayed, against plain launches."""
    from rlvr.rollout import fast_kernels as K
    from rlvr.rollout.fast_pdl_gemm import gate_up_silu, linear

    x0, w1, b1 = _inputs(64, 896, 896, dtype, seed=1)
    _, w2, _ = _inputs(64, 2 * 512, 896, dtype, seed=2)
    _, w3, _ = _inputs(64, 896, 512, dtype, seed=3)
    norm = torch.ones(896, device=DEVICE, dtype=dtype)

    def chain(pdl):
        x = x0.clone()
        h = K.add_rmsnorm_(x, None, norm, 1e-6, pdl)
        h = K.add_rmsnorm_(x, linear(h, w1, b1, pdl=pdl, prefetch=pdl), norm, 1e-6, pdl)
        return linear(gate_up_silu(h, w2, pdl=pdl, prefetch=pdl), w3, pdl=pdl, prefetch=pdl), x

    plain = chain(False)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        chain(True)  # compiles outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = chain(True)
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        for a, b in zip(captured, plain):
            assert torch.equal(a, b)


@needs_hopper
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_engine_greedy_equals_generate_on_the_pdl_path(arch):
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, arch=arch, device="cuda")
    engine = FastEngine(model, tokenizer, FastEngineConfig(kernels="triton", pdl_gemms=True))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="fast engine")
        _check_greedy_matches_generate(model, tokenizer, engine)
    assert engine.pdl_gemms and engine._forward.keywords["pdl"]
    assert all(st.graph is not None for st in engine._states.values())


@needs_hopper
def test_engine_sampled_logprobs_on_the_pdl_path_bf16_see_weight_updates():
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, dtype=torch.bfloat16, device="cuda")
    engine = FastEngine(model, tokenizer, FastEngineConfig(kernels="triton", pdl_gemms=True))
    params = SamplingParams(max_new_tokens=32, temperature=1.0, seed=3)
    _check_sampled_logprobs(model, tokenizer, engine, params, tol=0.3, mean_tol=0.05)
    with torch.no_grad():  # o_proj and down_proj are read in place; the stacked copies are refreshed
        model.model.layers[0].mlp.down_proj.weight.mul_(1.5)
        model.model.layers[1].self_attn.o_proj.weight.mul_(0.5)
        model.model.layers[1].mlp.up_proj.weight.mul_(0.5)
    _check_sampled_logprobs(model, tokenizer, engine, params, tol=0.3, mean_tol=0.05)
    assert engine.pdl_gemms and len(engine._states) == 1


@pytest.mark.skipif(INTERPRETED or not torch.cuda.is_available(), reason="the engine's Triton path needs CUDA")
def test_engine_option_falls_back_to_cublas_for_lora_and_compile():
    from peft import LoraConfig, get_peft_model

    tokenizer = build_char_tokenizer()
    lora = get_peft_model(_model(tokenizer, device="cuda"), LoraConfig(r=4, target_modules=["o_proj"]))
    engine = FastEngine(lora, tokenizer, FastEngineConfig(kernels="triton", pdl_gemms=True))
    assert engine.fused and not engine.pdl_gemms
    assert not FastEngine(_model(tokenizer, device="cuda"), tokenizer, FastEngineConfig(kernels="triton")).pdl_gemms
    compiled = FastEngineConfig(kernels="triton", pdl_gemms=True, compile=True)
    assert not FastEngine(_model(tokenizer, device="cuda"), tokenizer, compiled).pdl_gemms


@pytest.mark.skipif(INTERPRETED or not torch.cuda.is_available(), reason="the engine's Triton path needs CUDA")
def test_a_failing_pdl_gemm_build_steps_down_to_cublas(monkeypatch):
    from rlvr.rollout import fast_pdl_gemm

    def broken(*args, **kwargs):
        raise RuntimeError("no build for this GPU")

    monkeypatch.setattr(fast_pdl_gemm, "linear", broken)
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, device="cuda")
    engine = FastEngine(model, tokenizer, FastEngineConfig(kernels="triton", pdl_gemms=True))
    with pytest.warns(UserWarning, match="PDL GEMM decode kernels failed"):
        _check_greedy_matches_generate(model, tokenizer, engine)
    assert engine.fused and engine.stacked is not None and not engine.pdl_gemms
