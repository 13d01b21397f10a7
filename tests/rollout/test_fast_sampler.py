"""The fused sampler's inverse-CDF draw at the edges its split structure has: splits past the end
of the vocabulary (empty), masked (-inf) entries, all the mass at the very last column, one
column holding everything, greedy ties across splits. `gpu` tests (Triton); they pass under the
Triton CPU interpreter (`TRITON_INTERPRET=1`, CPU tensors), which is how they were written without
a GPU. The distribution tests at a Qwen-size vocabulary are in test_fast.py.
"""
from __future__ import annotations

import os

import pytest
import torch

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"
V = 10_000  # 5 blocks of 2048 columns: with 4 rows, 8 splits of one block each, the last 3 empty


def _sample(logits, temperature, seed):
    from rlvr.rollout.fast_kernels import sample_

    return sample_(logits.to(DEVICE), temperature, torch.tensor([seed], device=DEVICE))


@pytest.mark.gpu
def test_draws_follow_the_softmax_across_splits_and_never_pick_masked_entries():
    gen = torch.Generator().manual_seed(0)
    logits = torch.full((4, V), float("-inf"))
    hot = torch.tensor([5, 2047, 2048, 6000, 9999])  # block edges and the last column
    logits[:, hot] = torch.tensor([1.0, 2.0, 0.5, 1.5, 2.5])
    logits[:, 3000:3010] = torch.randn(10, generator=gen)  # a middle block
    expected = torch.log_softmax(logits[0] / 0.8, dim=-1)
    draws = []
    for seed in range(150):
        tokens, logp = _sample(logits, 0.8, seed)
        torch.testing.assert_close(logp.cpu(), expected[tokens.cpu()], atol=1e-5, rtol=0)
        draws.append(tokens.cpu())
    draws = torch.cat(draws)
    assert torch.isfinite(logits[0, draws]).all()  # masked entries never drawn
    freq = torch.bincount(draws, minlength=V).float() / draws.numel()
    # 600 draws over 15 outcomes: total variation about 0.06 expected
    assert 0.5 * (freq - expected.exp()).abs().sum().item() < 0.15


@pytest.mark.gpu
def test_a_single_live_column_is_always_drawn_wherever_it_lies():
    for column in (0, 2047, 2048, V - 1):
        logits = torch.full((4, V), -1e4)
        logits[:, column] = 30.0
        for seed in range(5):
            tokens, logp = _sample(logits, 1.0, seed)
            assert tokens.tolist() == [column] * 4
            assert logp.abs().max().item() < 1e-5


@pytest.mark.gpu
def test_a_flat_row_spreads_over_every_split():
    logits = torch.zeros(4, V)
    draws = torch.cat([_sample(logits, 1.0, seed)[0].cpu() for seed in range(100)])
    blocks = torch.bincount(draws // 2048, minlength=5).float() / draws.numel()
    share = torch.tensor([2048, 2048, 2048, 2048, V - 4 * 2048]) / V
    assert (blocks - share).abs().max().item() < 0.08  # 400 draws: sd about 0.02


@pytest.mark.gpu
def test_greedy_takes_the_first_maximum_and_its_log_prob():
    logits = torch.randn(4, V, generator=torch.Generator().manual_seed(1))
    logits[:, [100, 4500, 9000]] = 9.0  # a tie across three splits
    tokens, logp = _sample(logits, 0.0, 0)
    assert tokens.tolist() == [100] * 4
    torch.testing.assert_close(logp.cpu(), torch.log_softmax(logits, -1)[:, 100], atol=1e-5, rtol=0)
