"""Train an ORM or PRM with binary cross-entropy on verifier-made labels.

BCE takes soft targets as they are, so Math-Shepherd soft labels (fraction of rollouts correct)
and hard labels (0/1) go through the same loss: -[y log σ(z) + (1-y) log(1-σ(z))] at every scored
position (the last token for an ORM, every step end for a PRM).

BCE alone can be lowered by learning how hard a *problem* looks, which says nothing about which of
its solutions is right, and search only ever compares solutions of one problem. `pairwise_weight`
adds a within-problem ranking term on the final score, -log σ(z_right - z_wrong) averaged over the
(right, wrong) pairs of each problem (Bradley-Terry), and then batches whole problems together.
`mixed_problems_only` goes further and trains only on problems whose solutions have both outcomes:
a problem the policy always (or never) solves teaches only how hard it looks.
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
    pairwise_weight: float = 0.0
    """Weight of the within-problem ranking term (0: BCE only). With it, a batch holds every
    solution of each problem it draws (about batch_size solutions)."""
    mixed_problems_only: bool = False
    """Train only on problems with at least one right and one wrong solution (final label >= 0.5
    and < 0.5): within-problem signal only."""

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and learning_rate > 0")
        if self.pairwise_weight < 0:
            raise ValueError(f"pairwise_weight must be >= 0, got {self.pairwise_weight}")


def batch_loss(model: RewardModel, records: list[LabeledSolution], pairwise_weight: float = 0.0,
               encoded: list[tuple[list[int], list[int]]] | None = None) -> torch.Tensor:
    """Mean BCE over every scored position of the batch, plus the weighted within-problem ranking
    term when `pairwise_weight` > 0. `encoded`: the records' `model.positions`, when already made."""
    seqs, rows, cols, targets = [], [], [], []
    for b, rec in enumerate(records):
        ids, positions = encoded[b] if encoded is not None else model.positions(rec.prompt, rec.steps)
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
    loss = F.binary_cross_entropy_with_logits(picked, torch.tensor(targets, dtype=picked.dtype, device=device))
    if pairwise_weight > 0:
        last = [i for i in range(len(rows)) if i + 1 == len(rows) or rows[i + 1] != rows[i]]  # each record's final score
        loss = loss + pairwise_weight * pairwise_loss(picked[torch.tensor(last, device=device)], records)
    return loss


def by_problem(records: list[LabeledSolution]) -> list[list[int]]:
    """Record indices grouped by problem (prompt), in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        groups.setdefault(rec.prompt, []).append(i)
    return list(groups.values())


def mixed_outcome_records(records: list[LabeledSolution]) -> list[LabeledSolution]:
    """The records of problems that have both a right (final label >= 0.5) and a wrong solution."""
    keep = []
    for idx in by_problem(records):
        outcomes = {records[i].labels[-1] >= 0.5 for i in idx}
        if len(outcomes) == 2:
            keep += [records[i] for i in idx]
    return keep


def pairwise_loss(final_logits: torch.Tensor, records: list[LabeledSolution]) -> torch.Tensor:
    """Mean of -log σ(z_right - z_wrong) over the (right, wrong) pairs of each problem; 0 without pairs.
    Right: final label >= 0.5."""
    right, wrong = [], []
    for idx in by_problem(records):
        good = [i for i in idx if records[i].labels[-1] >= 0.5]
        bad = [i for i in idx if records[i].labels[-1] < 0.5]
        right += [g for g in good for _ in bad]
        wrong += [w for _ in good for w in bad]
    if not right:
        return final_logits.sum() * 0.0  # keeps the graph (and the device) of the batch
    device = final_logits.device
    margin = final_logits[torch.tensor(right, device=device)] - final_logits[torch.tensor(wrong, device=device)]
    return F.softplus(-margin).mean()  # softplus(-x) = -log σ(x), stable


def problem_batches(records: list[LabeledSolution], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of whole problems (every solution of a problem in one batch), about
    `batch_size` solutions each."""
    order = by_problem(records)
    rng.shuffle(order)
    batches, current = [], []
    for idx in order:
        if current and len(current) + len(idx) > batch_size:
            batches.append(current)
            current = []
        current = current + idx
    return batches + ([current] if current else [])


def train_reward_model(model: RewardModel, records: list[LabeledSolution], cfg: RewardTrainConfig | None = None,
                       progress: bool = False) -> list[float]:
    """Train in place; returns the mean loss of each epoch."""
    cfg = cfg or RewardTrainConfig()
    if cfg.mixed_problems_only:
        records = mixed_outcome_records(records)
        if not records:
            raise ValueError("mixed_problems_only: no problem has both a right and a wrong solution")
    if not records:
        raise ValueError("no labelled solutions to train on")
    rng = random.Random(cfg.seed)
    on_cuda = next(model.parameters()).is_cuda
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                  fused=on_cuda or None)
    encoded = [model.positions(r.prompt, r.steps) for r in records]  # tokenized once, not once per epoch
    model.train()
    epoch_losses = []
    order = list(range(len(records)))
    for epoch in range(cfg.epochs):
        if cfg.pairwise_weight > 0:
            batches = problem_batches(records, cfg.batch_size, rng)
        else:
            rng.shuffle(order)
            batches = [order[start:start + cfg.batch_size] for start in range(0, len(order), cfg.batch_size)]
        losses = []
        for batch in batches:
            loss = batch_loss(model, [records[i] for i in batch], cfg.pairwise_weight, [encoded[i] for i in batch])
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
