"""Step-level generation shared by beam search, DVTS and MCTS.

A `Path` is a partial solution: the steps written so far. `expand` samples k next steps for each
path (generation stops right after the step separator) and returns the children. A child is
finished when the policy ended (EOS) or the solution hit its token cap. Text is never generated
beyond the step that is kept, so a reward model always scores exactly what the search keeps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from rlvr.search.base import Problem
from rlvr.search.context import Completion, SearchContext


@dataclass
class Path:
    steps: list[str] = field(default_factory=list)
    """Steps so far (separators removed)."""
    finished: bool = False
    """The policy ended this solution (EOS) or it reached generation.max_new_tokens."""
    tokens: int = 0
    """Policy tokens in this path (for the per-solution cap)."""
    score: float | None = None
    """The latest scorer value of this path."""
    mean_logprob: float | None = None
    """Mean token log-prob of the last step, when the engine reports log-probs (MCTS priors)."""

    def text(self, separator: str) -> str:
        """The solution text as written: steps joined by the separator, trailing one if unfinished."""
        body = separator.join(self.steps)
        return body if self.finished or not self.steps else body + separator


def step_of(completion: Completion, separator: str) -> str:
    """The step a completion adds: its text up to the separator (a multi-character token may have
    run past it; those characters are dropped so the path holds only complete steps)."""
    text = completion.text
    cut = text.find(separator)
    return text[:cut] if cut >= 0 else text.rstrip("\n")


def expand(ctx: SearchContext, problem: Problem, paths: list[Path], k: int) -> tuple[list[list[Path]], int]:
    """k children of each path (grouped per path) and the policy tokens generated."""
    cap_total = ctx.generation.max_new_tokens
    by_cap: dict[int, list[int]] = {}
    for i, p in enumerate(paths):
        by_cap.setdefault(min(ctx.generation.max_step_tokens, cap_total - p.tokens), []).append(i)
    children: list[list[Path]] = [[] for _ in paths]
    spent = 0
    for cap, idx in by_cap.items():
        if cap < 1:  # no room left: the path is as long as a solution may be
            for i in idx:
                children[i] = [Path(list(paths[i].steps), True, paths[i].tokens)]
            continue
        prefixes = [problem.prompt + paths[i].text(ctx.separator) for i in idx]
        for i, group in zip(idx, ctx.sample_steps(prefixes, k, cap)):
            for c in group:
                spent += c.num_tokens
                tokens = paths[i].tokens + c.num_tokens
                # A step cut by max_step_tokens is a long step, not the end: only EOS or the
                # whole-solution cap finishes a path.
                done = c.finish == "eos" or tokens >= cap_total
                children[i].append(Path(paths[i].steps + [step_of(c, ctx.separator)], done, tokens,
                                        mean_logprob=c.mean_logprob))
    return children, spent


def score_paths(ctx: SearchContext, problem: Problem, paths: list[Path], scorer: str, aggregation: str) -> None:
    """Set `score` on each path (one batched scorer call)."""
    scores = ctx.score(scorer, problem, [p.text(ctx.separator) for p in paths], aggregation)
    for p, s in zip(paths, scores):
        p.score = s
