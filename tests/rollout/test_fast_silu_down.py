"""`fast_silu_down.silu_down`: SiLU * up and the down projection in one launch equal the torch ops
(`silu_mul` then F.linear) for every launch shape -- one split or several (the last program of a
tile sums the partials), row and column tiles that overhang, K not a multiple of the split --
and leave the per-tile counters at zero, so a second launch (a graph replay) is right too.

`gpu` tests (fp32 and bf16); in fp32 they pass under the Triton CPU interpreter
(`TRITON_INTERPRET=1`, CPU tensors), which is how they were written without a GPU.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"
DTYPES = [torch.float32] if INTERPRETED else [torch.float32, torch.bfloat16]

pytestmark = pytest.mark.gpu


def _reference(gate, up, weight):
    act = F.silu(gate.float()).to(gate.dtype)
    return F.linear((act.float() * up.float()).to(gate.dtype).float(), weight.float())


def _inputs(m, i, n, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    gate_up = torch.randn(m, 2 * i, generator=g).to(DEVICE, dtype)  # one projection's output: strided halves
    weight = (torch.randn(n, i, generator=g) * i ** -0.5).to(DEVICE, dtype)
    return gate_up[:, :i], gate_up[:, i:], weight


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,i,n,splits,block_n", [(5, 200, 48, 1, 32), (5, 200, 48, 3, 32), (40, 328, 96, 4, 64),
                                                  (17, 130, 70, 7, 32)])
def test_silu_down_equals_the_torch_ops(dtype, m, i, n, splits, block_n):
    from rlvr.rollout.fast_silu_down import _COUNTERS, SiluDownTiling, silu_down

    gate, up, weight = _inputs(m, i, n, dtype, seed=m + i)
    tiling = SiluDownTiling(block_m=16, block_n=block_n, block_k=32, splits=splits)
    for _ in range(2):  # the second launch finds the counters the first one left
        out = silu_down(gate, up, weight, tiling)
        assert out.shape == (m, n) and out.dtype == dtype
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(out.float(), _reference(gate, up, weight), rtol=tol, atol=tol)
    assert all(int(c.abs().sum()) == 0 for c in _COUNTERS.values())


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_down_is_deterministic_across_splits_arrival(dtype):
    from rlvr.rollout.fast_silu_down import SiluDownTiling, silu_down

    gate, up, weight = _inputs(64, 512, 128, dtype, seed=3)
    tiling = SiluDownTiling(block_m=64, block_n=64, block_k=64, splits=8)
    first = silu_down(gate, up, weight, tiling)
    for _ in range(5):
        assert torch.equal(silu_down(gate, up, weight, tiling), first)


@pytest.mark.skipif(INTERPRETED, reason="the engine's Triton path needs CUDA")
def test_engine_with_fused_silu_down_matches_generate_and_forward():
    from rlvr.models.char_tokenizer import build_char_tokenizer
    from rlvr.rollout.base import SamplingParams
    from rlvr.rollout.fast import FastEngine, FastEngineConfig

    from test_fast import _check_greedy_matches_generate, _check_sampled_logprobs, _model

    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, device="cuda")
    engine = FastEngine(model, tokenizer, FastEngineConfig(fuse_silu_down=True))
    assert engine._silu_down_tiling(8) is not None
    _check_greedy_matches_generate(model, tokenizer, engine)
    model = _model(tokenizer, dtype=torch.bfloat16, device="cuda")
    engine = FastEngine(model, tokenizer, FastEngineConfig(fuse_silu_down=True))
    params = SamplingParams(max_new_tokens=32, temperature=1.0, seed=3)
    _check_sampled_logprobs(model, tokenizer, engine, params, tol=0.3, mean_tol=0.05)
    assert engine.fused and all(st.graph is not None for st in engine._states.values())
