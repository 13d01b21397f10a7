"""The overlap options of the decode step's Triton kernels (`fast_kernels.launch_overlap`): an L2
prefetch of the next GEMM's weight and programmatic dependent launch change when work starts,
never what it computes. Each kernel's outputs equal its plain launch's bit for bit, in a CUDA
graph where every kernel reads what the cuBLAS GEMM just before it wrote (a missing wait would
read stale data), and the engine's tokens and log-probs are unchanged with both options on.

GPU only: the prefetch and the wait are PTX instructions the Triton CPU interpreter cannot run.
"""
from __future__ import annotations

import pytest
import torch

from rlvr.models.char_tokenizer import build_char_tokenizer
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.fast import FastEngine, FastEngineConfig

from test_fast import _model, _prompt_ids

pytestmark = pytest.mark.gpu

N, H, I, KV, HEADS, D, S = 48, 256, 768, 2, 8, 64, 576
OVERLAPS = [dict(prefetch=True, pdl=False), dict(prefetch=False, pdl=True), dict(prefetch=True, pdl=True)]


def _layer_chain(tensors, prefetch: bool, pdl: bool, splits: int):
    """A decode layer's launch order: GEMM -> add_rmsnorm_ -> GEMM -> rope_cache_attention_ -> GEMM
    -> add_rmsnorm_ -> GEMM -> silu_mul -> sample_; each Triton kernel reads the GEMM output before it."""
    from rlvr.rollout import fast_kernels as K

    t = tensors
    fetch = (t["w_qkv"], t["w_o"], t["w_up"], t["w_down"]) if prefetch else (None,) * 4
    x = t["x"].clone()
    h = K.add_rmsnorm_(x, t["h_in"] @ t["w_delta"].T, t["norm"], 1e-6, fetch[0], pdl)
    q, k, v = (h @ t["w_qkv"].T).split([HEADS * D, KV * D, KV * D], dim=1)
    k_cache, v_cache = t["k_cache"].clone(), t["v_cache"].clone()
    out = K.rope_cache_attention_(q, k, v, t["cos"], t["sin"], k_cache, v_cache, t["start"], t["col"],
                                  D ** -0.5, splits, prefetch=fetch[1], pdl=pdl)
    h2 = K.add_rmsnorm_(x, out @ t["w_o"].T, t["norm"], 1e-6, fetch[2], pdl)
    gate, up = (h2 @ t["w_up"].T).chunk(2, dim=1)
    act = K.silu_mul(gate, up, fetch[3], pdl)
    logits = act @ t["w_down"].T
    token, logp = K.sample_(logits, 0.9, t["seed"], pdl=pdl)
    return [x, h, out, k_cache, v_cache, h2, act, logits, token, logp]


def _tensors(dtype):
    g = torch.Generator(device="cuda").manual_seed(1)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, device="cuda") * scale).to(dtype)

    return dict(x=randn(N, H), h_in=randn(N, H), w_delta=randn(H, H, scale=H ** -0.5), norm=randn(H),
                w_qkv=randn((HEADS + 2 * KV) * D, H, scale=H ** -0.5), w_o=randn(H, HEADS * D, scale=0.1),
                w_up=randn(2 * I, H, scale=H ** -0.5), w_down=randn(4096, I, scale=I ** -0.5),
                cos=randn(N, D), sin=randn(N, D), k_cache=randn(N, KV, S, D), v_cache=randn(N, KV, S, D),
                start=torch.randint(0, 100, (N,), generator=g, device="cuda"),
                col=torch.tensor([S - 7], device="cuda"), seed=torch.tensor([5], device="cuda"))


@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("overlap", OVERLAPS, ids=lambda o: "+".join(k for k, v in o.items() if v))
def test_kernels_with_overlap_equal_plain_launches_in_a_graph(overlap, splits):
    t = _tensors(torch.bfloat16)
    plain = _layer_chain(t, False, False, splits)
    _layer_chain(t, splits=splits, **overlap)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = _layer_chain(t, splits=splits, **overlap)
    for _ in range(3):
        for out in captured:
            out.fill_(-1)  # poisoned: a launch that skipped its writes shows
        graph.replay()
        torch.cuda.synchronize()
        for name, a, b in zip(["x", "h", "attn", "k_cache", "v_cache", "h2", "act", "logits", "token", "logp"],
                              plain, captured):
            assert torch.equal(a, b), name


@pytest.mark.parametrize("overlap", OVERLAPS, ids=lambda o: "+".join(k for k, v in o.items() if v))
def test_engine_with_overlap_gives_the_same_tokens_and_logprobs(overlap):
    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, dtype=torch.bfloat16, device="cuda", hidden=128)
    params = SamplingParams(max_new_tokens=40, temperature=1.0, seed=11)
    prompts = _prompt_ids(tokenizer)
    plain = FastEngine(model, tokenizer, FastEngineConfig()).generate(prompts, 4, params)
    config = FastEngineConfig(prefetch_weights=overlap["prefetch"], pdl=overlap["pdl"])
    engine = FastEngine(model, tokenizer, config)
    ours = engine.generate(prompts, 4, params)
    assert engine.fused and all(st.graph is not None for st in engine._states.values())
    assert ours.completion_ids == plain.completion_ids
    assert ours.logprobs == plain.logprobs
