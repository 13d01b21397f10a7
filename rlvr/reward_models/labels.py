"""Training labels for reward models, made by the verifiers (no human annotation).

ORM: sample solutions, label each by whether the verifier accepts its final answer.
PRM (Math-Shepherd, Wang et al. 2312.08935): for each step prefix of a sampled solution, roll out
N completions; the step's hard label is 1 if any completion reaches a verified answer, its soft
label the fraction that do. The last step's label is the solution's own outcome.

Generation is batched across problems and step prefixes (`chunk` prompts per engine call): on a
CPU one call with many rows costs little more than a call with one.
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


def verified(examples: list[Example], texts: list[str]) -> list[float]:
    """Verifier scores (0..1) of completions, one example per text (all of one kind)."""
    from verifiers import verify_batch

    by_kind: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_kind.setdefault(ex.kind, []).append(i)
    scores = [0.0] * len(texts)
    for kind, idx in by_kind.items():
        results = verify_batch(kind, [texts[i] for i in idx], [examples[i].reference for i in idx])
        for i, r in zip(idx, results):
            scores[i] = float(r.score)
    return scores


def _per_call(rows: int | None, n: int, default: int = 16) -> int:
    """Prompts per engine call so that a call samples about `rows` sequences (n per prompt)."""
    return max(1, rows // n) if rows else default


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def sample_solutions(ctx, problems: list[tuple[str, Example]], n: int, chunk: int = 16) -> list[tuple[str, Example, str]]:
    """(prompt, example, solution text) for n sampled solutions of every problem."""
    out = []
    for part in _chunks(problems, chunk):
        groups = ctx.sample([prompt for prompt, _ in part], n, ctx.generation.max_new_tokens)
        for (prompt, ex), group in zip(part, groups):
            out += [(prompt, ex, c.text) for c in group]
    return out


def orm_labels(ctx, problems: list[tuple[str, Example]], num_generations: int,
               rows_per_call: int | None = None) -> list[LabeledSolution]:
    """Sample solutions per (prompt, example) and label each with its verified outcome."""
    solutions = sample_solutions(ctx, problems, num_generations, _per_call(rows_per_call, num_generations))
    scores = verified([ex for _, ex, _ in solutions], [text for _, _, text in solutions])
    return [LabeledSolution(prompt, split_steps(text, ctx.separator) or [text], [score])
            for (prompt, _, text), score in zip(solutions, scores)]


def prm_labels(
    ctx,
    problems: list[tuple[str, Example]],
    num_generations: int,
    rollouts_per_step: int,
    label_type: Literal["hard", "soft"] = "hard",
    rows_per_call: int | None = None,
) -> list[LabeledSolution]:
    """Math-Shepherd step labels for sampled solutions (hard: any rollout correct; soft: fraction)."""
    if label_type not in ("hard", "soft"):
        raise ValueError(f"label_type must be 'hard' or 'soft', got {label_type!r}")
    if rollouts_per_step < 1:
        raise ValueError(f"rollouts_per_step must be >= 1, got {rollouts_per_step}")
    solutions = sample_solutions(ctx, problems, num_generations, _per_call(rows_per_call, num_generations))
    outcomes = verified([ex for _, ex, _ in solutions], [text for _, _, text in solutions])
    records, prefixes = [], []
    for (prompt, ex, text), outcome in zip(solutions, outcomes):
        steps = split_steps(text, ctx.separator) or [text]
        records.append(LabeledSolution(prompt, steps, []))
        prefixes += [(len(records) - 1, prompt, ex, steps[: i + 1]) for i in range(len(steps) - 1)]
    labels = step_labels(ctx, [(prompt, ex, steps) for _, prompt, ex, steps in prefixes], rollouts_per_step, label_type,
                         _per_call(rows_per_call, rollouts_per_step, 32))
    for (r, *_), label in zip(prefixes, labels):
        records[r].labels.append(label)
    for record, outcome in zip(records, outcomes):
        record.labels.append(outcome if label_type == "soft" else float(outcome >= 1.0))
    return records


def step_labels(ctx, prefixes: list[tuple[str, Example, list[str]]], n: int, label_type: str,
                chunk: int = 32) -> list[float]:
    """How often rollouts from each (prompt, example, step prefix) reach a verified answer."""
    labels: list[float] = []
    for part in _chunks(prefixes, chunk):
        texts = [join_steps(steps, ctx.separator) for _, _, steps in part]
        groups = ctx.sample([prompt + text for (prompt, _, _), text in zip(part, texts)], n,
                            ctx.generation.max_new_tokens)
        flat_ex = [ex for (_, ex, _), group in zip(part, groups) for _ in group]
        flat_text = [text + c.text for text, group in zip(texts, groups) for c in group]
        scores = verified(flat_ex, flat_text)
        for j in range(len(part)):
            hits = [s >= 1.0 for s in scores[j * n:(j + 1) * n]]
            labels.append(float(any(hits)) if label_type == "hard" else sum(hits) / len(hits))
    return labels


def step_label(ctx, prompt: str, example: Example, prefix_steps: list[str], n: int, label_type: str) -> float:
    """The label of one step prefix (see `step_labels`)."""
    return step_labels(ctx, [(prompt, example, prefix_steps)], n, label_type)[0]
