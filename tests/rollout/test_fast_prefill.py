"""The prefill on the Triton kernels (`prefill_forward_fused`, what the engine and refill run when
the decode step runs Triton) equals the torch prefill: last-position logits and every layer's
K/V, with left padding, with and without the stacked projections.

A `gpu` test (fp32 and bf16 on the GPU); in fp32 it passes under the Triton CPU interpreter
(`TRITON_INTERPRET=1`, CPU tensors).
"""
from __future__ import annotations

import os

import pytest
import torch

from rlvr.models.char_tokenizer import build_char_tokenizer

from test_fast import _model

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"
DTYPES = [torch.float32] if INTERPRETED else [torch.float32, torch.bfloat16]


@pytest.mark.gpu
@pytest.mark.parametrize("stacked", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_prefill_equals_the_torch_prefill(stacked, dtype):
    from rlvr.rollout.fast_forward import ModelParts, prefill_forward, prefill_forward_fused
    from rlvr.rollout.fast_stacked import StackedProjections
    from rlvr.rollout.tokens import left_pad

    tokenizer = build_char_tokenizer()
    model = _model(tokenizer, device=DEVICE, dtype=dtype)
    parts = ModelParts.of(model)
    stack = StackedProjections(parts) if stacked else None
    if stack is not None:
        stack.refresh()
    prompts = [tokenizer.encode("12+7="), tokenizer.encode("3*4+100="), tokenizer.encode("9=")]
    ids, valid = left_pad(prompts, tokenizer.pad_token_id, DEVICE)
    with torch.no_grad():
        logits, keys, values = prefill_forward(parts, ids, valid.bool())
        fused_logits, fused_keys, fused_values = prefill_forward_fused(parts, ids, valid.bool(), stack)
    # bf16: the Triton RoPE rounds once from fp32, torch's after each op (a logit moves by ~0.06)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-1, rtol=5e-2)
    torch.testing.assert_close(fused_logits, logits, **tol)
    real = valid.bool()[:, None, :, None]  # padding columns are never read
    for a, b in zip(fused_keys + fused_values, keys + values):
        assert a.shape == b.shape
        torch.testing.assert_close(a * real, b * real, **tol)
    assert fused_logits.dtype == torch.float32
