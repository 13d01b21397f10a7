"""From a policy and a task to a trained ORM or PRM: sample, label with the verifier, train."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from rlvr.reward_models.labels import orm_labels, prm_labels
from rlvr.reward_models.model import RewardModel
from rlvr.reward_models.train import RewardTrainConfig, evaluate_loss, train_reward_model


@dataclass
class FitConfig:
    """How a reward model is made from a policy's own samples."""

    renamed: ClassVar[dict[str, str]] = {
        "samples_per_problem": "renamed to num_generations (samples per problem, as the recipes name it)"}
    """Old keys and what replaced them (`rlvr.config.from_dict` says so)."""

    kind: Literal["orm", "prm"] = "orm"
    """orm (outcome labels) or prm (Math-Shepherd step labels)."""
    num_generations: int = 8
    """Solutions sampled per training problem."""
    rollouts_per_step: int = 4
    """PRM only: completions rolled out from each step prefix to label it."""
    label_type: Literal["hard", "soft"] = "hard"
    """PRM only: hard = any rollout correct, soft = fraction correct."""
    backbone: Literal["policy", "tiny"] = "policy"
    """policy: a copy of the policy's transformer under the value head; tiny: a fresh small model."""
    tiny_hidden_size: int = 64
    """Width of the fresh small backbone (backbone: tiny)."""
    tiny_layers: int = 2
    """Depth of the fresh small backbone (backbone: tiny)."""
    rows_per_call: int | None = None
    """Sequences sampled per engine call while labelling (None: 16 problems or 32 step prefixes a
    call, right for a CPU; a GPU takes thousands)."""
    train: RewardTrainConfig = field(default_factory=RewardTrainConfig)
    """Optimisation."""


def make_backbone_model(policy_model, tokenizer, cfg: FitConfig, separator: str) -> RewardModel:
    extra = dict(step_separator=separator, label_type=cfg.label_type)
    if cfg.backbone == "policy":
        # float32 weights whatever the policy generates in: bf16 weights drop small updates.
        return RewardModel.from_policy(policy_model, tokenizer, cfg.kind, **extra).float()
    from rlvr.models import TinyModelConfig, build_tiny_model

    heads = max(1, cfg.tiny_hidden_size // 32)
    small = build_tiny_model(tokenizer, TinyModelConfig(hidden_size=cfg.tiny_hidden_size, num_layers=cfg.tiny_layers,
                                                        num_heads=heads, intermediate_size=4 * cfg.tiny_hidden_size,
                                                        max_position_embeddings=2048))
    return RewardModel.from_policy(small, tokenizer, cfg.kind, **extra)


def fit_reward_model(ctx, policy_model, problems, cfg: FitConfig, progress: bool = True) -> tuple[RewardModel, dict, list]:
    """Sample solutions of `problems` (rlvr.search.Problem) with the context's policy, label them,
    train a reward model; returns it, the facts of the fit (record count, losses, time) and the
    labelled records it was trained on."""
    start = time.time()
    pairs = [(p.prompt, p.example) for p in problems]
    if cfg.kind == "orm":
        records = orm_labels(ctx, pairs, cfg.num_generations, cfg.rows_per_call)
    else:
        records = prm_labels(ctx, pairs, cfg.num_generations, cfg.rollouts_per_step, cfg.label_type,
                             cfg.rows_per_call)
    labelled = time.time()
    model = make_backbone_model(policy_model, ctx.tokenizer, cfg, ctx.separator)
    initial = evaluate_loss(model, records)
    losses = train_reward_model(model, records, cfg.train, progress=progress)
    positives = sum(label >= 0.5 for r in records for label in r.labels)
    total = sum(len(r.labels) for r in records)
    return model, {
        "kind": cfg.kind, "records": len(records), "labels": total, "positive_fraction": positives / max(1, total),
        "initial_loss": initial, "epoch_losses": losses, "label_seconds": labelled - start,
        "train_seconds": time.time() - labelled,
    }, records
