"""SFT follows the model's `gradient_checkpointing` setting. TRL's SFTConfig turns checkpointing on by
default, which made every SFT stage recompute its activations (a third more compute) whatever the
recipe said."""
from __future__ import annotations

import pytest

from rlvr.config import from_dict
from rlvr.models import ModelConfig, load_policy
from rlvr.tasks import make_task
from rlvr.trainer.sft import run_sft, worked_solution_pairs
from rlvr.trainer.sft_config import SFTStageConfig


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8, "target_modules": "all-linear"}])
def test_sft_checkpoints_activations_only_when_the_model_asks(tmp_path, checkpointing, lora):
    raw = {"name_or_path": "tiny", "precision": "fp32", "gradient_checkpointing": checkpointing,
           "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}}
    if lora:
        raw["lora"] = lora
    policy = load_policy(from_dict(ModelConfig, raw), device="cpu")
    pairs = worked_solution_pairs(make_task("arithmetic", seed=0, difficulty=1).held_out(8), policy.tokenizer, "plain")
    cfg = from_dict(SFTStageConfig, {"steps": 2, "batch_size": 4, "max_length": 64, "logging_steps": 1})
    metrics = run_sft(policy, pairs, cfg, tmp_path)
    base = policy.model.get_base_model() if lora else policy.model
    assert base.is_gradient_checkpointing is checkpointing
    assert metrics["sft/steps"] == 2


@pytest.mark.parametrize("checkpointing", [False, True])
def test_sft_out_of_memory_names_the_settings_that_fit(tmp_path, monkeypatch, checkpointing):
    import torch
    import transformers

    def no_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 808.00 MiB.")

    monkeypatch.setattr(transformers.Trainer, "train", no_memory)
    raw = {"name_or_path": "tiny", "precision": "fp32", "gradient_checkpointing": checkpointing,
           "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}}
    policy = load_policy(from_dict(ModelConfig, raw), device="cpu")
    pairs = worked_solution_pairs(make_task("arithmetic", seed=0, difficulty=1).held_out(4), policy.tokenizer, "plain")
    cfg = from_dict(SFTStageConfig, {"steps": 2, "batch_size": 4, "max_length": 64})
    with pytest.raises(torch.OutOfMemoryError) as caught:
        run_sft(policy, pairs, cfg, tmp_path)
    message = str(caught.value)
    assert "4 sequences x up to 64 tokens" in message and "gradient_accumulation_steps" in message
    assert ("gradient_checkpointing: true" in message) is not checkpointing
    assert "Tried to allocate 808.00 MiB" in message
