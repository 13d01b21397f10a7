"""Split-KV decode attention: each (sequence, KV head)'s cache columns divided over several
programs, whose partial softmaxes a second launch combines, equals the single-pass kernel and a
torch reference, wherever the current column and the rows' left padding fall among the splits.

The split-count heuristic and the engine's switch are CPU tests. The kernel tests are `gpu` tests
(fp32 and bf16); they pass in fp32 under the Triton CPU interpreter (`TRITON_INTERPRET=1`, CPU
tensors), which is how they were written without a GPU.
"""
from __future__ import annotations

import os

import pytest
import torch

from rlvr.models.char_tokenizer import build_char_tokenizer
from rlvr.rollout.fast import FastEngine, FastEngineConfig
from rlvr.rollout.fast_split_kv import MIN_SPLIT_COLUMNS, attention_splits

from test_fast import _model

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"
DTYPES = [torch.float32] if INTERPRETED else [torch.float32, torch.bfloat16]  # bf16 on the GPU only

N, KV, HEADS, D, S = 4, 2, 14, 32, 320  # 7 query heads per KV head: not a power of two
# the splits divide the visible 64-column blocks start // 64 .. col // 64 evenly: some splits are
# empty on short ranges, and a range's first block can hold left padding
STARTS = [0, 3, 130, 260]  # left padding (capped at the column)
COLS = [5, 127, 128, 200, S - 1]  # in the first block, its last column, on a block boundary, mid-cache, the last


# ----------------------------------------------------------------------------- the split count (CPU)

def test_attention_splits_fill_the_gpu_only_where_it_is_idle():
    sms = 132  # an H200
    assert attention_splits(64, 2, 4608, sms) == 5  # 128 programs: 640 with splits of 960 columns
    assert attention_splits(256, 2, 384, sms) == 1  # short cache, 512 programs
    assert attention_splits(64, 2, 640, sms) == 1  # short cache
    assert attention_splits(256, 2, 4608, sms) == 1  # 512 programs fill it
    # compacted batches over the same cache split further, down to MIN_SPLIT_COLUMNS per split
    assert attention_splits(32, 2, 4608, sms) == 9
    assert attention_splits(8, 2, 4608, sms) == 4608 // MIN_SPLIT_COLUMNS
    for n in (1, 2, 8, 16, 32, 64, 100, 131):
        for s in (1088, 2048, 4608, 16384):
            splits = attention_splits(n, 2, s, sms)
            assert splits >= 1 and (splits == 1 or s // splits >= MIN_SPLIT_COLUMNS)


def test_more_programs_per_sm_split_further_until_the_minimum_split_length():
    sms = 132
    assert attention_splits(64, 2, 4608, sms, programs_per_sm=8) == 9  # 1056 programs wanted, 8.25 -> 9 splits
    assert attention_splits(64, 2, 4608, sms, programs_per_sm=2) == 3
    assert attention_splits(64, 2, 4608, sms, programs_per_sm=64) == 4608 // MIN_SPLIT_COLUMNS
    assert attention_splits(64, 2, 4608, sms, programs_per_sm=None) == attention_splits(64, 2, 4608, sms)
    assert attention_splits(64, 2, 640, sms, programs_per_sm=8) == 1  # a short cache stays single-pass


def test_engine_takes_the_split_count_from_each_batch_and_can_turn_it_off():
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer)  # 2 KV heads
    engine = FastEngine(model, tokenizer, FastEngineConfig())
    full = engine._attention_splits(64, 4608)
    assert full == attention_splits(64, 2, 4608, engine.sm_count) > 1
    assert engine._attention_splits(8, 4608) > full  # a compacted batch: fewer rows, more splits
    off = FastEngine(model, tokenizer, FastEngineConfig(split_kv=False))
    assert off._attention_splits(64, 4608) == off._attention_splits(8, 4608) == 1


# ----------------------------------------------------------------------------- the kernels (gpu / interpreter)

def _reference(q, k_cache, v_cache, start, col, scale):
    """Softmax over the columns start[n]..col of each sequence, the G query heads of a KV head
    sharing its keys and values; fp32."""
    n, kv, s, d = k_cache.shape
    q = q.float().view(n, kv, -1, d)
    scores = torch.einsum("nkgd,nksd->nkgs", q, k_cache.float()) * scale
    cols = torch.arange(s, device=q.device)
    visible = (cols[None, :] >= start[:, None]) & (cols[None, :] <= col)  # (N, S)
    scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
    return torch.einsum("nkgs,nksd->nkgd", scores.softmax(-1), v_cache.float()).reshape(n, -1)


def _inputs(dtype, s=S, n=N, seed=0):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    q = torch.randn(n, HEADS, D, generator=gen, device=DEVICE).to(dtype)
    k_cache, v_cache = (torch.randn(n, KV, s, D, generator=gen, device=DEVICE).to(dtype) for _ in range(2))
    return q, k_cache, v_cache


def _close(out, ref, dtype):
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("col", COLS)
def test_split_attention_equals_single_pass_and_torch(col, dtype):
    from rlvr.rollout.fast_kernels import decode_attention

    q, k_cache, v_cache = _inputs(dtype)
    start = torch.tensor(STARTS, device=DEVICE).clamp(max=col)
    col_t = torch.tensor([col], device=DEVICE)
    scale = D ** -0.5
    single = decode_attention(q, k_cache, v_cache, start, col_t, scale, splits=1)
    reference = _reference(q, k_cache, v_cache, start, col, scale)
    _close(single, reference, dtype)
    for splits in (2, 3, 5):  # 5: one 64-column block per split
        split = decode_attention(q, k_cache, v_cache, start, col_t, scale, splits=splits)
        assert split.dtype == dtype and split.shape == (N, HEADS * D)
        assert not split.isnan().any()
        _close(split, single, dtype)
        _close(split, reference, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("block_s,num_warps,num_stages", [(32, 2, None), (128, 8, 3), (16, 4, 2)])
def test_every_tiling_computes_the_same_attention(block_s, num_warps, num_stages):
    """Launch parameters change speed only: block sizes that split the columns differently, other
    warp counts and pipelining depths give the torch reference, single-pass and split."""
    from rlvr.rollout.fast_kernels import AttentionTiling, decode_attention

    tiling = AttentionTiling(block_s, num_warps, num_stages)
    q, k_cache, v_cache = _inputs(torch.float32)
    for col in (5, 200, S - 1):
        start = torch.tensor(STARTS, device=DEVICE).clamp(max=col)
        reference = _reference(q, k_cache, v_cache, start, col, 0.25)
        for splits in (1, 3):
            out = decode_attention(q, k_cache, v_cache, start, torch.tensor([col], device=DEVICE), 0.25, splits, tiling)
            _close(out, reference, torch.float32)


@pytest.mark.gpu
def test_default_split_count_on_a_long_cache_equals_torch():
    """splits=None picks `attention_splits`: one sequence on 1088 columns splits 4 ways."""
    from rlvr.rollout.fast_kernels import decode_attention

    s = 1088
    assert attention_splits(1, KV, s, 132) == 4
    q, k_cache, v_cache = _inputs(torch.float32, s=s, n=1, seed=1)
    start, col = torch.tensor([300], device=DEVICE), 1000
    out = decode_attention(q, k_cache, v_cache, start, torch.tensor([col], device=DEVICE), 0.2)
    _close(out, _reference(q, k_cache, v_cache, start, col, 0.2), torch.float32)


@pytest.mark.gpu
@pytest.mark.parametrize("fused_gemms", [False, True])
def test_decode_step_with_split_attention_equals_single_pass(fused_gemms):
    """The forward passes `attn_splits` to every layer's attention: the step's logits and cache
    writes are the single-pass ones (up to summation order: later layers' keys and values depend
    on earlier layers' attention)."""
    from rlvr.rollout.fast_forward import ModelParts, decode_forward_fused, decode_forward_fused_gemm

    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, device=DEVICE, hidden=128)  # head dim 32: the fused GEMMs fit too
    parts = ModelParts.of(model)
    forward = decode_forward_fused_gemm if fused_gemms else decode_forward_fused
    gen = torch.Generator(device=DEVICE).manual_seed(2)
    shape = (N, parts.kv_heads, S, parts.head_dim)
    caches = [torch.randn(shape, generator=gen, device=DEVICE) for _ in range(2 * len(parts.layers))]
    tokens = torch.randint(0, len(tokenizer), (N,), generator=gen, device=DEVICE)
    col = torch.tensor([200], device=DEVICE)  # in the second of 3 splits; positions stay in the model's range
    start = torch.tensor(STARTS, device=DEVICE).clamp(max=col)
    pos = col - start
    results = []
    with torch.no_grad():
        for splits in (1, 3):
            k, v = [c.clone() for c in caches[::2]], [c.clone() for c in caches[1::2]]
            results.append((forward(parts, tokens, pos, col, start, k, v, attn_splits=splits), k, v))
    (single, k1, v1), (split, k3, v3) = results
    torch.testing.assert_close(split, single, atol=1e-4, rtol=1e-4)
    for a, b in zip(k1 + v1, k3 + v3):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(INTERPRETED, reason="CUDA graphs")
def test_engine_with_split_attention_decodes_as_the_single_pass_engine(monkeypatch):
    """Forced to 3 splits, the CUDA-graph engine decodes the tokens and log-probs of the engine
    without split-KV: columns past the first split, empty splits early on, the scratch allocated
    inside the graph."""
    from rlvr.rollout import fast
    from rlvr.rollout.base import SamplingParams

    from test_fast import _prompt_ids

    asked = []  # the batch sizes the split count is asked for: one per captured graph
    monkeypatch.setattr(fast, "attention_splits", lambda n, *shape: asked.append(n) or 3)
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, device="cuda")
    params = SamplingParams(max_new_tokens=120, temperature=0.0)  # prompt + 120 columns of 192: 3 splits of 64
    outs = []
    for split_kv in (True, False):
        engine = FastEngine(model, tokenizer, FastEngineConfig(kernels="triton", length_bucket=192, split_kv=split_kv))
        engine.eos_ids = []  # no stop token: every row runs all 120 steps, into the third split
        outs.append(engine.generate(_prompt_ids(tokenizer), 2, params))
        if split_kv:
            graphs = next(iter(engine._states.values())).graphs
            assert asked and set(asked) == set(graphs)
    split, single = outs
    assert split.lengths == [120] * 6 and split.completion_ids == single.completion_ids
    for a, b in zip(split.logprobs, single.logprobs):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-4, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_rope_and_cache_equals_hf_rotary(dtype):
    """`rope_and_cache_` (the prefill's launch, and the reference of the fused one below): q and k
    rotated as HF's apply_rotary_pos_emb, k and v written at the cache column, nothing else."""
    from rlvr.kernels.triton_layers import rotary_reference
    from rlvr.rollout.fast_kernels import rope_and_cache_

    gen = torch.Generator(device=DEVICE).manual_seed(6)
    qkv = torch.randn(N, (HEADS + 2 * KV) * D, generator=gen, device=DEVICE).to(dtype)
    q, k, v = qkv.split([HEADS * D, KV * D, KV * D], dim=1)
    cos, sin = (torch.randn(N, D, generator=gen, device=DEVICE).to(dtype) for _ in range(2))
    _, k_cache, v_cache = _inputs(dtype, seed=7)
    k_new, v_new = k_cache.clone(), v_cache.clone()
    col = 77
    rotated = rope_and_cache_(q, k, v, cos, sin, k_new, v_new, torch.tensor([col], device=DEVICE))
    want_q, want_k = rotary_reference(q.float().view(N, HEADS, D), k.float().view(N, KV, D), cos.float(), sin.float())
    _close(rotated, want_q, dtype)
    _close(k_new[:, :, col], want_k, dtype)
    assert torch.equal(v_new[:, :, col], v.view(N, KV, D))
    others = torch.arange(S, device=DEVICE) != col
    assert torch.equal(k_new[:, :, others], k_cache[:, :, others]) and torch.equal(v_new[:, :, others], v_cache[:, :, others])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("splits", [1, 3])
def test_rope_cache_attention_equals_rope_then_attention(splits, dtype):
    """The fused launch rotates q and k, writes k and v at the column and attends, as
    `rope_and_cache_` followed by `decode_attention` do: same output, same cache, for q/k/v that
    are column slices of one projection and a column in any split (the writer is the split holding it)."""
    from rlvr.rollout.fast_kernels import decode_attention, rope_and_cache_, rope_cache_attention_

    gen = torch.Generator(device=DEVICE).manual_seed(3)
    qkv = torch.randn(N, (HEADS + 2 * KV) * D, generator=gen, device=DEVICE).to(dtype)
    q, k, v = qkv.split([HEADS * D, KV * D, KV * D], dim=1)
    _, k_cache, v_cache = _inputs(dtype, seed=4)
    for col in COLS:
        start = torch.tensor(STARTS, device=DEVICE).clamp(max=col)
        angles = (col - start)[:, None].float() * torch.linspace(0.01, 1.0, D // 2, device=DEVICE).repeat(2)
        cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
        col_t = torch.tensor([col], device=DEVICE)
        k1, v1, k2, v2 = k_cache.clone(), v_cache.clone(), k_cache.clone(), v_cache.clone()
        rotated = rope_and_cache_(q, k, v, cos, sin, k1, v1, col_t)
        two_launches = decode_attention(rotated, k1, v1, start, col_t, D ** -0.5, splits)
        fused = rope_cache_attention_(q, k, v, cos, sin, k2, v2, start, col_t, D ** -0.5, splits)
        _close(fused, two_launches, dtype)
        assert torch.equal(v2, v1)
        _close(k2, k1, dtype)
        assert not torch.equal(k2[:, :, col], k_cache[:, :, col])  # the column was written
        _close(fused, _reference(rotated, k1, v1, start, col, D ** -0.5), dtype)
