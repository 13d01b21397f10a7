"""LoRA through rlvr.models (peft) with gradient checkpointing: only adapters train, the KL
reference is the base model with the adapter off (no copy), checkpoints hold the adapters only,
and a resumed LoRA run equals an uninterrupted one bit for bit."""
import json

import pytest
import torch
from safetensors.torch import load_file

from rlvr.rewards import compute_rewards
from rlvr.trainer import run_grpo

from grpo_fixtures import SevensTask, lora_policy, small_config


def lora_config(**overrides):
    return small_config(steps=3, beta=0.1, learning_rate=5e-2, save_every=1, keep_last=0, **overrides)


def test_lora_trains_adapters_against_the_disabled_adapter_reference(tmp_path):
    policy = lora_policy()
    frozen = {k: v.clone() for k, v in policy.model.named_parameters() if not v.requires_grad}
    run_grpo(policy, SevensTask(), lora_config(), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["kl/mean"] == pytest.approx(0.0, abs=1e-6)  # before any update: policy == reference
    assert rows[-1]["kl/mean"] > 0.0  # adapters moved away from the base
    for k, v in policy.model.named_parameters():
        if not v.requires_grad:
            assert torch.equal(frozen[k], v), f"frozen base weight {k} changed"
    saved = load_file(str(tmp_path / "checkpoints" / "step-00000003" / "trainable.safetensors"))
    assert saved and all("lora_" in k for k in saved)
    assert (tmp_path / "model" / "adapter").is_dir()  # save_policy: merged model + adapter


class Stop(Exception):
    pass


def test_lora_resume_is_bitwise_identical(tmp_path):
    run_grpo(lora_policy(), SevensTask(), lora_config(), tmp_path / "full")
    calls = {"n": 0}

    def reward_then_stop(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Stop
        return compute_rewards(*args, **kwargs)

    with pytest.raises(Stop):
        run_grpo(lora_policy(), SevensTask(), lora_config(), tmp_path / "cut", reward_fn=reward_then_stop)
    run_grpo(lora_policy(), SevensTask(), lora_config(), tmp_path / "cut", resume="auto")
    final = "checkpoints/step-00000003/trainable.safetensors"
    a, b = load_file(str(tmp_path / "full" / final)), load_file(str(tmp_path / "cut" / final))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_old_and_reference_logprobs_are_scored_as_sampled_without_dropout(tmp_path, monkeypatch):
    """The ratio's denominator and the KL reference describe the policy the engine sampled, which
    runs in eval mode: with adapter dropout on, scoring them in train mode would draw new masks."""
    from rlvr.trainer import grpo

    modes, score = [], grpo._logprobs

    def recording(model, *args, **kwargs):
        modes.append(model.training)
        return score(model, *args, **kwargs)

    monkeypatch.setattr(grpo, "_logprobs", recording)
    run_grpo(lora_policy(dropout=0.5), SevensTask(), lora_config(num_iterations=2), tmp_path)
    assert len(modes) == 2 * 3 and not any(modes)  # old + reference log-probs, three steps


def test_grpo_generates_from_the_merged_copy_unless_told_not_to(tmp_path):
    from rlvr.models.merged_lora import lora_layers
    from rlvr.trainer.grpo import _setup

    merged = _setup(lora_policy(), SevensTask(), small_config(), tmp_path / "merged", None)
    assert merged.generation.is_copy and not lora_layers(merged.generation.model)
    through = _setup(lora_policy(), SevensTask(), small_config(engine={"name": "hf", "merge_lora": False}),
                     tmp_path / "peft", None)
    assert lora_layers(through.generation.model)
