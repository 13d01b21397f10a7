"""Train an ORM or PRM with binary cross-entropy on verifier-made labels.

BCE takes soft targets as they are, so Math-Shepherd soft labels (fraction of rollouts correct)
and hard labels (0/1) go through the same loss: -[y log σ(z) + (1-y) log(1-σ(z))] at every scored
position (the last token for an ORM, every step end for a PRM).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlvr.reward_models.labels import LabeledSolution
from rlvr.reward_models.model import RewardModel


@dataclass
class RewardTrainConfig:
    """Optimisation of a reward model."""

    epochs: int = 3
    """Passes over the labelled solutions."""
    learning_rate: float = 5e-4
    """AdamW learning rate (tiny models from scratch like it large; pretrained backbones want ~1e-5)."""
    batch_size: int = 8
    """Solutions per optimizer step."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    seed: int = 0
    """Shuffling seed."""

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and learning_rate > 0")


def batch_loss(model: RewardModel, records: list[LabeledSolution]) -> torch.Tensor:
    """Mean BCE over every scored position of the batch."""
    seqs, rows, cols, targets = [], [], [], []
    for b, rec in enumerate(records):
        ids, positions = model.positions(rec.prompt, rec.steps)
        if len(positions) != len(rec.labels):
            raise ValueError(
                f"{model.config.kind} record with {len(rec.steps)} steps has {len(rec.labels)} labels; "
                f"expected {len(positions)}"
            )
        seqs.append(ids)
        rows += [b] * len(positions)
        cols += positions
        targets += rec.labels
    logits = model._logits(seqs)  # (b, T)
    device = logits.device
    picked = logits[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]
    return F.binary_cross_entropy_with_logits(picked, torch.tensor(targets, dtype=picked.dtype, device=device))


def train_reward_model(model: RewardModel, records: list[LabeledSolution], cfg: RewardTrainConfig | None = None,
                       progress: bool = False) -> list[float]:
    """Train in place; returns the mean loss of each epoch."""
    cfg = cfg or RewardTrainConfig()
    if not records:
        raise ValueError("no labelled solutions to train on")
    rng = random.Random(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    model.train()
    epoch_losses = []
    order = list(range(len(records)))
    for epoch in range(cfg.epochs):
        rng.shuffle(order)
        losses = []
        for start in range(0, len(order), cfg.batch_size):
            loss = batch_loss(model, [records[i] for i in order[start:start + cfg.batch_size]])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())  # host sync once per step, for the epoch mean
        epoch_losses.append(sum(losses) / len(losses))
        if progress:
            print(f"[{model.config.kind}] epoch {epoch + 1}/{cfg.epochs} loss {epoch_losses[-1]:.4f}")
    model.eval()
    return epoch_losses


@torch.no_grad()
def evaluate_loss(model: RewardModel, records: list[LabeledSolution], batch_size: int = 16) -> float:
    """Mean BCE over the records (no update)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        total += batch_loss(model, chunk).item() * len(chunk)
        count += len(chunk)
    return total / count
