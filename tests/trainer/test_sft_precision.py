"""SFT under bf16-kahan: TRL's Trainer builds KahanAdamW with its own settings (weight-decay groups,
betas), the weights stay bfloat16 while the compensation keeps a lr-1e-6 step, and a resumed run
keeps float32 moments (torch would round them to bfloat16 on load)."""
from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from rlvr.config import from_dict
from rlvr.models import ModelConfig, load_policy
from rlvr.tasks import make_task
from rlvr.trainer.optimizer import KahanAdamW
from rlvr.trainer.sft import run_sft, worked_solution_pairs
from rlvr.trainer.sft_config import SFTStageConfig

TINY = {"name_or_path": "tiny", "precision": "bf16-kahan",
        "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}}


class _Stop(Exception):
    pass


class _Watcher(TrainerCallback):
    """Keeps the optimizer and the step training began at; raises before `stop_at`."""

    def __init__(self, stop_at: int | None = None):
        self.stop_at, self.optimizer, self.first_step = stop_at, None, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.first_step = state.global_step

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        self.optimizer = optimizer
        if state.global_step == self.stop_at:
            raise _Stop


def _run(tmp_path, monkeypatch, watcher: _Watcher, resume: bool = False, **settings):
    import trl

    real = getattr(trl.SFTTrainer, "unwatched", trl.SFTTrainer)  # not an earlier run's watcher

    class Watched(real):
        unwatched = real

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(watcher)

    monkeypatch.setattr(trl, "SFTTrainer", Watched)
    policy = load_policy(from_dict(ModelConfig, TINY), device="cpu")
    examples = make_task("arithmetic", seed=0, difficulty=1, ops=["+"]).held_out(16)
    pairs = worked_solution_pairs(examples, policy.tokenizer, "plain")
    cfg = from_dict(SFTStageConfig, {"batch_size": 4, "logging_steps": 1, "max_length": 64, **settings})
    run_sft(policy, pairs, cfg, tmp_path, resume=resume)
    return policy


def test_sft_in_bf16_kahan_trains_bf16_weights_with_kahan_adamw(tmp_path, monkeypatch):
    watcher = _Watcher()
    before = {n: p.detach().clone() for n, p in load_policy(from_dict(ModelConfig, TINY)).model.named_parameters()}
    policy = _run(tmp_path, monkeypatch, watcher, steps=2, learning_rate=1e-6, warmup_ratio=0.0,
                  lr_scheduler="constant", weight_decay=0.1)
    opt = watcher.optimizer.optimizer  # accelerate's wrapper around what the Trainer built
    assert isinstance(opt, KahanAdamW)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.1]  # biases and norms: no decay
    after = dict(policy.model.named_parameters())
    assert all(p.dtype == torch.bfloat16 for p in after.values())
    moved = sum((after[n].detach() != p).sum().item() for n, p in before.items())
    assert moved < 0.1 * sum(p.numel() for p in before.values())  # a lr-1e-6 step rounds away in bf16...
    compensation = torch.cat([s["compensation"].flatten() for s in opt.state.values()])
    assert (compensation != 0).float().mean() > 0.9  # ...and the compensation keeps it


def test_resumed_sft_in_bf16_kahan_keeps_float32_moments(tmp_path, monkeypatch):
    settings = dict(steps=4, save_steps=2, learning_rate=1e-3)
    with pytest.raises(_Stop):
        _run(tmp_path, monkeypatch, _Watcher(stop_at=3), **settings)
    watcher = _Watcher()
    _run(tmp_path, monkeypatch, watcher, resume=True, **settings)
    assert watcher.first_step == 2  # from checkpoint-2
    state = watcher.optimizer.optimizer.state
    assert all(s["exp_avg"].dtype == s["exp_avg_sq"].dtype == torch.float32 for s in state.values())
    assert all(s["compensation"].dtype == torch.bfloat16 for s in state.values())


@pytest.mark.usefixtures("fresh_accelerate_state")  # bf16 autocast: accelerate keeps one mode per process
def test_lora_sft_under_bf16_mixed_trains_float32_adapters_on_a_frozen_bfloat16_base(tmp_path):
    model = {**TINY, "precision": "bf16-mixed", "lora": {"r": 4, "alpha": 8}}
    policy = load_policy(from_dict(ModelConfig, model), device="cpu")
    params = dict(policy.model.named_parameters())
    base = {n: p.detach().clone() for n, p in params.items() if not p.requires_grad}
    adapters = {n: p.detach().clone() for n, p in params.items() if p.requires_grad}
    assert all(p.dtype == torch.bfloat16 for p in base.values())
    assert all(p.dtype == torch.float32 for p in adapters.values())
    examples = make_task("arithmetic", seed=0, difficulty=1, ops=["+"]).held_out(16)
    pairs = worked_solution_pairs(examples, policy.tokenizer, "plain")
    cfg = from_dict(SFTStageConfig, {"batch_size": 4, "logging_steps": 1, "max_length": 64, "steps": 2,
                                     "learning_rate": 1e-3})
    run_sft(policy, pairs, cfg, tmp_path)
    assert all(torch.equal(params[n], v) for n, v in base.items())
    assert any(not torch.equal(params[n].detach(), v) for n, v in adapters.items())
    saved = load_policy(from_dict(ModelConfig, {**TINY, "name_or_path": str(tmp_path / "model"), "precision": "bf16"}),
                        device="cpu")
    assert all("lora_" not in n for n, _ in saved.model.named_parameters())  # saved merged
