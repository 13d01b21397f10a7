"""Run search methods over problems at growing budgets N and measure accuracy and tokens.

How a method spends a budget N (one place, so every comparison uses the same rule):
best_of_n / majority_vote / weighted_vote: N samples; beam_search: N candidates per step
(beam width N / expansions); dvts: N / expansions subtrees; mcts: N simulations; adaptive: its
levels sized like beam_search and best_of_n at N; thinking: N × `thinking_unit` thinking tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rlvr.eval.curves import Point
from rlvr.search.base import Problem, SearchResult, get_method, replace
from rlvr.search.batched import run_search_batch


@dataclass
class Outcome:
    """One method's result on one problem at one budget."""

    method: str
    n: int
    difficulty: int
    correct: bool
    tokens: int
    scored_tokens: int
    answer: str | None
    details: dict = field(default_factory=dict)


def _split(n: int, expansions: int) -> tuple[int, int]:
    m = min(expansions, n)
    return max(1, n // m), m


def config_at_budget(name: str, base, n: int, thinking_unit: int = 16):
    """The method's config with its compute knob set for budget N."""
    if name in ("best_of_n", "majority_vote", "weighted_vote"):
        return replace(base, num_generations=n)
    if name == "beam_search":
        width, m = _split(n, base.expansions)
        return replace(base, beam_width=width, expansions=m)
    if name == "dvts":
        subtrees, m = _split(n, base.expansions)
        return replace(base, subtrees=subtrees, expansions=m)
    if name == "mcts":
        return replace(base, simulations=n)
    if name == "adaptive":
        return replace(base, beam=config_at_budget("beam_search", base.beam, n),
                       best_of_n=replace(base.best_of_n, num_generations=n))
    if name == "thinking":
        return replace(base, budget=n * thinking_unit)
    raise ValueError(f"no budget rule for search method {name!r}")


def is_correct(problem: Problem, result: SearchResult) -> bool:
    """Evaluation, not search: checked outside the context so it never counts as search cost."""
    from rlvr.search.scorers import VerifierScorer

    return VerifierScorer().score(problem, [result.text])[0] >= 1.0


def run_method(name: str, cfg, problems: list[Problem], ctx, n: int, progress=None, label: str | None = None,
               max_rows: int = 4096) -> list[Outcome]:
    """One method at one budget over every problem, searched together (`run_search_batch`)."""
    outcomes = []
    for problem, result in zip(problems, run_search_batch(name, problems, ctx, cfg, max_rows=max_rows)):
        correct = is_correct(problem, result)
        outcomes.append(Outcome(label or name, n, problem.example.difficulty, correct, result.tokens_spent,
                                result.details.get("scored_tokens", 0), result.answer,
                                {k: v for k, v in result.details.items() if k in ("level", "accepted", "forced_close")}))
    if progress is not None:
        progress.update(len(problems))
    return outcomes


def summarize(outcomes: list[Outcome]) -> list[Point]:
    """Points (overall and per difficulty) from outcomes of one method at one budget."""
    points = []
    levels = [None] + sorted({o.difficulty for o in outcomes})
    for level in levels:
        chosen = [o for o in outcomes if level is None or o.difficulty == level]
        points.append(Point(chosen[0].method, chosen[0].n, sum(o.correct for o in chosen) / len(chosen),
                            sum(o.tokens for o in chosen) / len(chosen), level, len(chosen)))
    return points


def compare_methods(problems: list[Problem], ctx, methods: dict[str, object], ns: list[int],
                    thinking_unit: int = 16, show_progress: bool = True,
                    max_rows: int = 4096) -> tuple[list[Point], list[Outcome]]:
    """Every (method, N): accuracy and mean tokens over `problems`. `methods` maps a label to
    (registered method name, base config), or a label that is itself a method name to its config."""
    from tqdm.auto import tqdm

    points, outcomes = [], []
    bar = tqdm(total=len(methods) * len(ns) * len(problems), desc="search", disable=not show_progress)
    for label, spec in methods.items():
        name, base = spec if isinstance(spec, tuple) else (label, spec)
        base = base if base is not None else get_method(name).config_cls()
        for n in ns:
            cfg = config_at_budget(name, base, n, thinking_unit)
            got = run_method(name, cfg, problems, ctx, n, bar, label, max_rows)
            outcomes += got
            points += summarize(got)
    bar.close()
    return points, outcomes
