"""Training precision: bf16-mixed keeps float32 master weights, so a GRPO step at lr 1e-6 moves
them; pure bf16 rounds most of that step away; bf16-kahan keeps it in the optimizer's
compensation. Generation reads a bfloat16 copy refreshed from the masters (bf16-mixed) or the
weights themselves. (CPU: bf16 autocast runs there too, so the arithmetic is the GPU's.)"""
from __future__ import annotations

import pytest
import torch

from grpo_fixtures import SevensTask, small_config, tiny_policy
from rlvr.models import ModelConfig, load_policy
from rlvr.models.generation_weights import GenerationWeights
from rlvr.models.precision import resolve_precision, weight_dtype
from rlvr.trainer.grpo import run_grpo

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def _policy(precision: str):
    policy = tiny_policy()
    policy.precision = precision
    policy.model.to(weight_dtype(precision, train=True))
    return policy


def _moved_fraction(before: dict, model) -> float:
    moved = total = 0
    for name, p in model.named_parameters():
        moved += (p.detach().float() != before[name]).sum().item()
        total += p.numel()
    return moved / total


def _one_step(precision: str, tmp_path) -> tuple[float, object]:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    policy = _policy(precision)
    before = {n: p.detach().float().clone() for n, p in policy.model.named_parameters()}
    cfg = small_config(steps=1, learning_rate=1e-6, max_grad_norm=0.0)
    with pytest.warns(UserWarning, match="round away") if precision == "bf16" else _no_warning():
        run_grpo(policy, SevensTask(), cfg, tmp_path / precision)
    return _moved_fraction(before, policy.model), policy


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_one_adamw_step_at_lr_1e6_moves_bf16_mixed_masters_and_rounds_away_in_pure_bf16(tmp_path):
    mixed, mixed_policy = _one_step("bf16-mixed", tmp_path)
    pure, pure_policy = _one_step("bf16", tmp_path)
    assert all(p.dtype == torch.float32 for p in mixed_policy.model.parameters())
    assert all(p.dtype == torch.bfloat16 for p in pure_policy.model.parameters())
    # AdamW's first step moves every weight with a gradient by about lr: float32 keeps it
    assert mixed > 0.9, mixed
    # bfloat16 resolves 2^-8 of a weight near 0.02 (8e-5): only weights near zero can move
    assert pure < 0.1, pure


def test_generation_weights_are_a_bfloat16_copy_refreshed_from_the_masters():
    policy = _policy("bf16-mixed")
    weights = GenerationWeights(policy.model, torch.bfloat16)
    assert weights.is_copy and not weights.needs_autocast
    copy_params = dict(weights.model.named_parameters())
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in copy_params.values())
    storage = {n: p.data_ptr() for n, p in copy_params.items()}
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(0.5)
    weights.refresh()
    for name, master in policy.model.named_parameters():
        assert torch.equal(copy_params[name], master.detach().to(torch.bfloat16)), name
        assert copy_params[name].data_ptr() == storage[name]  # in place: CUDA graphs see it
    # buffers (RoPE's inv_freq) keep float32, as when a model is loaded in bfloat16
    assert all(b.dtype == torch.float32 for b in weights.model.buffers() if b.is_floating_point())


def test_the_engines_stacked_projections_are_views_of_the_bfloat16_copy():
    from rlvr.rollout.fast_forward import ModelParts
    from rlvr.rollout.fast_stacked import StackedProjections

    policy = _policy("bf16-mixed")
    weights = GenerationWeights(policy.model, torch.bfloat16)
    parts = ModelParts.of(weights.model)
    stacked = StackedProjections(parts)
    layer = parts.layers[0]
    qkv, _, gate_up = stacked.stacks[0]
    assert qkv.data_ptr() == layer.self_attn.q_proj.weight.data_ptr()  # no second copy to hold or refresh
    assert gate_up.data_ptr() == layer.mlp.gate_proj.weight.data_ptr()
    with torch.no_grad():
        for p in policy.model.parameters():
            p.mul_(1.5)
    weights.refresh()
    h = torch.randn(3, layer.self_attn.q_proj.in_features, dtype=torch.bfloat16)
    master = policy.model.model.layers[0]
    for got, module in zip(stacked.qkv(0, h) + stacked.gate_up(0, h),
                           (master.self_attn.q_proj, master.self_attn.k_proj, master.self_attn.v_proj,
                            master.mlp.gate_proj, master.mlp.up_proj)):
        expected = torch.nn.functional.linear(h, module.weight.to(torch.bfloat16),
                                              None if module.bias is None else module.bias.to(torch.bfloat16))
        torch.testing.assert_close(got, expected)


def test_fp32_and_pure_bf16_generate_from_the_trained_weights_themselves():
    for precision in ("fp32", "bf16"):
        policy = _policy(precision)
        weights = GenerationWeights(policy.model, torch.float32 if precision == "fp32" else torch.bfloat16)
        assert weights.model is policy.model and not weights.is_copy


def test_bfloat16_weights_are_never_copied_wider_for_generation():
    # A policy built by hand around bfloat16 weights trains as bf16 and generates from its own
    # weights: a float32 copy (what precision fp32 would ask for) would only be slower.
    from rlvr.models.loading import Policy

    policy = _policy("bf16")
    bare = Policy(model=policy.model, tokenizer=policy.tokenizer)
    assert bare.precision == "bf16"
    weights = GenerationWeights(policy.model, torch.float32)
    assert weights.model is policy.model and not weights.is_copy
    assert Policy(model=_policy("fp32").model, tokenizer=policy.tokenizer).precision == "fp32"


def test_precision_auto_is_bf16_mixed_on_cuda_and_fp32_on_the_cpu():
    assert resolve_precision("auto", "cuda") == "bf16-mixed"
    assert resolve_precision("auto", "cpu") == "fp32"
    assert weight_dtype("bf16-mixed", train=True) == torch.float32
    assert weight_dtype("bf16-mixed", train=False) == torch.bfloat16  # eval stages only generate
    assert weight_dtype("bf16-kahan", train=True) == torch.bfloat16
    assert weight_dtype("bf16-mixed", train=True, frozen=True) == torch.bfloat16  # a LoRA base
    assert weight_dtype("fp32", train=True, frozen=True) == torch.float32
    with pytest.raises(ValueError, match="valid: auto, bf16-mixed, bf16-kahan, bf16, fp32"):
        resolve_precision("fp16", "cpu")


def test_load_policy_keeps_masters_for_training_and_compute_dtype_for_generation():
    tiny = dict(name_or_path="tiny", tiny={"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                             "intermediate_size": 64, "max_position_embeddings": 64})
    from rlvr.config import from_dict

    cfg = from_dict(ModelConfig, {**tiny, "precision": "bf16-mixed"})
    trained = load_policy(cfg, device="cpu")
    generating = load_policy(cfg, device="cpu", train=False)
    assert trained.precision == generating.precision == "bf16-mixed"
    assert trained.model.dtype == torch.float32 and generating.model.dtype == torch.bfloat16
    assert load_policy(from_dict(ModelConfig, tiny), device="cpu").precision == "fp32"  # auto on the CPU


def test_lora_under_bf16_mixed_keeps_its_frozen_base_bfloat16_and_trains_float32_adapters(tmp_path):
    from rlvr.config import from_dict

    cfg = from_dict(ModelConfig, dict(
        name_or_path="tiny", precision="bf16-mixed", lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        tiny={"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64,
              "max_position_embeddings": 128}))
    policy = load_policy(cfg, device="cpu")
    params = dict(policy.model.named_parameters())
    trainable = {n: p.detach().clone() for n, p in params.items() if p.requires_grad}
    assert trainable and all("lora_" in n and p.dtype == torch.float32 for n, p in trainable.items())
    # the base never updates: no float32 master for it (14 GiB of weights at the 7B shape)
    assert all(p.dtype == torch.bfloat16 for n, p in params.items() if n not in trainable)

    weights = GenerationWeights(policy.model, torch.bfloat16)
    copied = dict(weights.model.named_parameters())
    assert weights.is_copy and all(copied[n] is p for n, p in params.items() if n not in trainable)  # shared
    assert all(copied[n].dtype == torch.bfloat16 and copied[n] is not params[n] for n in trainable)

    run_grpo(policy, SevensTask(), small_config(steps=1, learning_rate=1e-6, max_grad_norm=0.0), tmp_path)
    moved = sum((params[n].detach() != v).sum().item() for n, v in trainable.items())
    # lora_B starts at zero, so only it gets a gradient on the first step; it moves by ~lr
    lora_b = sum(v.numel() for n, v in trainable.items() if "lora_B" in n)
    assert moved >= 0.9 * lora_b, (moved, lora_b)
    weights.refresh()
    assert all(torch.equal(copied[n], params[n].detach().to(torch.bfloat16)) for n in trainable)


def test_bf16_kahan_keeps_a_lr_1e6_step_in_its_compensation_and_generates_from_the_weights(tmp_path):
    from rlvr.trainer.grpo import _setup

    kahan, policy = _one_step("bf16-kahan", tmp_path)
    assert all(p.dtype == torch.bfloat16 for p in policy.model.parameters())
    assert kahan < 0.1, kahan  # the bf16 weights round as pure bf16 does...
    saved = torch.load(tmp_path / "bf16-kahan" / "checkpoints" / "step-00000001" / "optimizer.pt",
                       weights_only=True)["state"]
    compensation = torch.cat([s["compensation"].flatten() for s in saved.values()])
    assert compensation.dtype == torch.bfloat16
    assert (compensation != 0).float().mean() > 0.9  # ...and the optimizer keeps what they dropped
    assert all(s["exp_avg"].dtype == torch.float32 for s in saved.values())
    t = _setup(_policy("bf16-kahan"), SevensTask(), small_config(), tmp_path / "setup", None)
    assert type(t.optimizer.optimizer).__name__ == "KahanAdamW"
    assert not t.generation.is_copy  # no float32 masters to copy from


def test_pure_bf16_warns_only_when_bfloat16_weights_train():
    import warnings

    from rlvr.config import from_dict
    from rlvr.models.precision import warn_pure_bf16

    tiny = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
    cfg = from_dict(ModelConfig, dict(name_or_path="tiny", precision="bf16", lora={"r": 2, "alpha": 4}, tiny=tiny))
    lora = load_policy(cfg, device="cpu")  # a frozen bfloat16 base, float32 adapters: nothing rounds away
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_pure_bf16("bf16", 1e-6, lora.model)
    with pytest.warns(UserWarning, match="round away"):
        warn_pure_bf16("bf16", 1e-6, _policy("bf16").model)
