"""Training labels for reward models, made by the verifiers (no human annotation).

ORM: sample solutions, label each by whether the verifier accepts its final answer.
PRM (Math-Shepherd, Wang et al. 2312.08935): for each step prefix of a sampled solution, roll out
N completions; the step's hard label is 1 if any completion reaches a verified answer, its soft
label the fraction that do. The last step's label is the solution's own outcome.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlvr.reward_models.steps import join_steps, split_steps
from rlvr.tasks.base import Example


@dataclass
class LabeledSolution:
    """One training record: a solution cut into steps and a label per scored position."""

    prompt: str
    """The text before the solution (the rendered task prompt)."""
    steps: list[str]
    """The solution's steps (separators removed)."""
    labels: list[float]
    """ORM: [outcome]; PRM: one label in [0, 1] per step."""


def verified(example: Example, texts: list[str]) -> list[float]:
    """Verifier scores (0..1) of completions of `example`."""
    from verifiers import verify_batch

    results = verify_batch(example.kind, texts, [example.reference] * len(texts))
    return [float(r.score) for r in results]


def orm_labels(ctx, problems: list[tuple[str, Example]], samples_per_problem: int) -> list[LabeledSolution]:
    """Sample solutions per (prompt, example) and label each with its verified outcome."""
    records = []
    for prompt, example in problems:
        completions = ctx.sample_solutions(prompt, samples_per_problem)
        scores = verified(example, [c.text for c in completions])
        for c, score in zip(completions, scores):
            steps = split_steps(c.text, ctx.separator) or [c.text]
            records.append(LabeledSolution(prompt, steps, [score]))
    return records


def prm_labels(
    ctx,
    problems: list[tuple[str, Example]],
    samples_per_problem: int,
    rollouts_per_step: int,
    label_type: Literal["hard", "soft"] = "hard",
) -> list[LabeledSolution]:
    """Math-Shepherd step labels for sampled solutions (hard: any rollout correct; soft: fraction)."""
    if label_type not in ("hard", "soft"):
        raise ValueError(f"label_type must be 'hard' or 'soft', got {label_type!r}")
    if rollouts_per_step < 1:
        raise ValueError(f"rollouts_per_step must be >= 1, got {rollouts_per_step}")
    records = []
    for prompt, example in problems:
        for c in ctx.sample_solutions(prompt, samples_per_problem):
            steps = split_steps(c.text, ctx.separator) or [c.text]
            outcome = verified(example, [c.text])[0]
            labels = [step_label(ctx, prompt, example, steps[: i + 1], rollouts_per_step, label_type)
                      for i in range(len(steps) - 1)]
            labels.append(outcome if label_type == "soft" else float(outcome >= 1.0))
            records.append(LabeledSolution(prompt, steps, labels))
    return records


def step_label(ctx, prompt: str, example: Example, prefix_steps: list[str], n: int, label_type: str) -> float:
    """How often rollouts from this step prefix reach a verified answer."""
    prefix = join_steps(prefix_steps, ctx.separator)
    rollouts = ctx.sample_solutions(prompt + prefix, n)
    scores = verified(example, [prefix + r.text for r in rollouts])
    hits = [s >= 1.0 for s in scores]
    return float(any(hits)) if label_type == "hard" else sum(hits) / len(hits)
