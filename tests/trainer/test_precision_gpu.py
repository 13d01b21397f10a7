"""The GRPO step on CUDA in each precision (fast engine, Triton kernels): bf16-mixed trains float32
masters and generates from a bfloat16 copy; pure bf16 loses most lr-1e-6 updates; fp32 keeps them."""
from __future__ import annotations

import pytest
import torch

from grpo_fixtures import SevensTask, small_config, tiny_policy
from rlvr.models.precision import weight_dtype
from rlvr.trainer.grpo import _setup, run_grpo

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("fresh_accelerate_state")]


def _cuda_policy(precision: str):
    policy = tiny_policy(hidden=64)
    policy.precision = precision
    policy.model.to(device="cuda", dtype=weight_dtype(precision, train=True))
    return policy


def _config(**overrides):
    return small_config(engine="auto", kernels="auto", learning_rate=1e-6, max_grad_norm=0.0, **overrides)


@pytest.mark.parametrize("precision,expect_moved", [("bf16-mixed", True), ("fp32", True), ("bf16", False)])
def test_grpo_step_on_cuda_in_each_precision(tmp_path, precision, expect_moved):
    policy = _cuda_policy(precision)
    before = {n: p.detach().float().clone() for n, p in policy.model.named_parameters()}
    metrics = run_grpo(policy, SevensTask(), _config(steps=2), tmp_path)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values() if isinstance(v, float))
    moved = sum((p.detach().float() != before[n]).sum().item() for n, p in policy.model.named_parameters())
    fraction = moved / sum(p.numel() for p in policy.model.parameters())
    assert (fraction > 0.9) if expect_moved else (fraction < 0.1), fraction
    assert all(p.dtype == weight_dtype(precision, train=True) for p in policy.model.parameters())


def test_bf16_mixed_generates_with_the_fast_engine_from_a_bfloat16_copy(tmp_path):
    policy = _cuda_policy("bf16-mixed")
    t = _setup(policy, SevensTask(), _config(), tmp_path, None)
    assert type(t.engine).__name__ == "FastEngine"
    assert t.generation.is_copy and t.engine.model.lm_head.weight.dtype == torch.bfloat16
    with torch.no_grad():
        for p in t.acc.unwrap_model(t.model).parameters():
            p.add_(0.01)
    t.generation.refresh()
    master = t.acc.unwrap_model(t.model).lm_head.weight
    assert torch.equal(t.engine.model.lm_head.weight, master.detach().to(torch.bfloat16))


def test_bf16_kahan_trains_bfloat16_weights_the_fast_engine_reads_in_place(tmp_path):
    policy = _cuda_policy("bf16-kahan")
    t = _setup(policy, SevensTask(), _config(), tmp_path / "setup", None)
    assert type(t.engine).__name__ == "FastEngine" and not t.generation.is_copy
    assert type(t.optimizer.optimizer).__name__ == "KahanAdamW"
    run_grpo(_cuda_policy("bf16-kahan"), SevensTask(), _config(steps=2, save_every=1), tmp_path / "run")
    saved = torch.load(tmp_path / "run" / "checkpoints" / "step-00000002" / "optimizer.pt", weights_only=True)
    compensation = torch.cat([s["compensation"].flatten().float() for s in saved["state"].values()])
    assert (compensation != 0).float().mean() > 0.9  # the lr-1e-6 steps bf16 rounding dropped are kept
    assert all(s["exp_avg"].dtype == torch.float32 for s in saved["state"].values())


def test_peak_memory_per_step_is_logged(tmp_path):
    """`memory/peak_gib`: the step's peak allocation, at least the float32 masters it trains."""
    policy = _cuda_policy("bf16-mixed")
    masters = sum(p.numel() * p.element_size() for p in policy.model.parameters()) / 2**30
    metrics = run_grpo(policy, SevensTask(), _config(steps=1), tmp_path)
    assert masters < metrics["memory/peak_gib"] < torch.cuda.get_device_properties(0).total_memory / 2**30
