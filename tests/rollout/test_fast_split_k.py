"""Split-K o_proj / down_proj (`FastEngineConfig.split_k`): the Triton GEMM's fp32 partial sums add
up to x @ W^T, the residual add + RMSNorm that consumes them equals torch's add and norm, and the
engine with them generates what transformers generates.

The plan and the engine's switch are CPU tests. The kernel tests are `gpu` tests that also pass in
fp32 under the Triton CPU interpreter (`TRITON_INTERPRET=1`, CPU tensors); the engine tests need CUDA.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from rlvr.models.char_tokenizer import build_char_tokenizer
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.fast import FastEngine, FastEngineConfig
from rlvr.rollout.fast_forward import ModelParts, fits_split_k
from rlvr.rollout.fast_split_k import SplitK

from test_fast import _check_greedy_matches_generate, _check_sampled_logprobs, _model

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"
DTYPES = [torch.float32] if INTERPRETED else [torch.float32, torch.bfloat16]

# rows not a multiple of the row tile, columns not of BLOCK_N, K not of BLOCK_K
SHAPES = [(5, 96, 200), (64, 130, 384), (70, 64, 257)]


def test_plan_fills_the_gpu_with_whole_k_blocks():
    from rlvr.rollout.fast_split_k import PROGRAMS_PER_SM, split_k_plan

    sms = 132
    # o_proj of the Qwen2-0.5B shape at 64 rows: 14 column tiles, 7 chunks of 128 (K = 896 allows no more)
    assert split_k_plan(64, 896, 896, sms).parts == 7
    # down_proj (K = 4864): 14 tiles x 19 chunks = 266 programs, two per SM
    plan = split_k_plan(64, 896, 4864, sms)
    assert plan.parts == 19 and 14 * plan.parts >= PROGRAMS_PER_SM * sms
    # rows beyond one tile make more tiles, so fewer chunks
    assert split_k_plan(256, 896, 4864, sms).parts == 5
    # output tiles alone fill the GPU: no split
    assert split_k_plan(256, 151936, 896, sms).parts == 1


def test_engine_uses_split_k_only_where_it_applies():
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer)
    assert fits_split_k(ModelParts.of(model))
    # the torch path (CPU) never splits, whatever the option
    assert not FastEngine(model, tokenizer, FastEngineConfig(split_k=True)).split_k
    model.model.layers[1].mlp.down_proj.bias = torch.nn.Parameter(torch.zeros(model.config.hidden_size))
    assert not fits_split_k(ModelParts.of(model))  # a bias would be dropped


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_partials_add_up_to_the_product(m, n, k, dtype):
    from rlvr.rollout import fast_kernels as K

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(m, k, generator=g) / k ** 0.5).to(DEVICE, dtype)
    w = torch.randn(n, k, generator=g).to(DEVICE, dtype)
    expected = x.float() @ w.float().T
    for parts in (1, 2, 3, 8):
        plan = SplitK(parts, block_n=64, block_k=64)
        partials = K.linear_partials(x, w, plan)
        assert partials.dtype == torch.float32 and partials.shape[1:] == (m, n)
        assert 1 <= partials.shape[0] <= parts
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(partials.sum(0), expected, atol=tol, rtol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_add_rmsnorm_adds_up_the_partials(dtype):
    from rlvr.rollout import fast_kernels as K

    g = torch.Generator().manual_seed(1)
    m, n, k = 6, 96, 320
    x = (torch.randn(m, k, generator=g) / k ** 0.5).to(DEVICE, dtype)
    w = torch.randn(n, k, generator=g).to(DEVICE, dtype)
    resid = torch.randn(m, n, generator=g).to(DEVICE, dtype)
    norm_w = (1 + 0.1 * torch.randn(n, generator=g)).to(DEVICE, dtype)
    partials = K.linear_partials(x, w, SplitK(3, block_n=32, block_k=64))
    assert partials.shape[0] == 3
    expected_resid = (resid.float() + x.float() @ w.float().T).to(dtype)
    expected = F.rms_norm(expected_resid, (n,), norm_w, 1e-6)
    out = K.add_rmsnorm_(resid, partials, norm_w, 1e-6)  # resid updated in place
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(resid, expected_resid, atol=tol, rtol=tol)
    torch.testing.assert_close(out, expected, atol=tol, rtol=tol)


@pytest.mark.gpu
@pytest.mark.skipif(INTERPRETED or not torch.cuda.is_available(), reason="the engine's Triton path needs CUDA")
def test_engine_with_split_k_generates_what_transformers_does():
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, device="cuda")
    engine = FastEngine(model, tokenizer, FastEngineConfig(split_k=True))
    _check_greedy_matches_generate(model, tokenizer, engine)
    assert engine.fused and engine.split_k
    model = _model(tokenizer, dtype=torch.bfloat16, device="cuda")
    engine = FastEngine(model, tokenizer, FastEngineConfig(split_k=True))
    params = SamplingParams(max_new_tokens=32, temperature=1.0, seed=3)
    _check_sampled_logprobs(model, tokenizer, engine, params, tol=0.3, mean_tol=0.05)
    with torch.no_grad():  # weights updated in place are seen by the captured graph
        model.model.layers[0].mlp.down_proj.weight.mul_(1.5)
        model.model.layers[1].self_attn.o_proj.weight.mul_(0.5)
    _check_sampled_logprobs(model, tokenizer, engine, params, tol=0.3, mean_tol=0.05)
