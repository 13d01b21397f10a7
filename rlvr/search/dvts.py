"""Diverse verifier tree search (DVTS, Beeching et al. 2024; search-and-learn's `dvts`).

`subtrees` independent searches, each greedy: expand its current path `expansions` ways, keep the
best-scored child, repeat until it finishes or hits `max_steps`. Independence keeps the answers
diverse where one beam search collapses onto one high-scoring prefix. Length is bounded only by
the context's `generation.max_new_tokens` and `max_step_tokens` (no hidden caps).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlvr.search.base import Problem, SearchResult, register_search, require_positive
from rlvr.search.context import SearchContext, extract
from rlvr.search.steps import Path, expand, score_paths


@dataclass
class DVTSConfig:
    """Diverse verifier tree search."""

    subtrees: int = 2
    """Independent subtrees (search-and-learn: n / beam_width)."""
    expansions: int = 4
    """Next steps sampled per subtree per step; the best-scored one is kept."""
    max_steps: int = 8
    """Step limit per subtree."""
    scorer: str = "prm"
    """What scores the children: prm, orm, verifier or judge."""
    aggregation: Literal["last", "min", "prod", "mean"] = "last"
    """How a PRM's step scores become a path score."""

    def validate(self):
        require_positive("dvts", subtrees=self.subtrees, expansions=self.expansions, max_steps=self.max_steps)


@register_search("dvts", DVTSConfig, "independent greedy subtrees scored by a PRM")
def dvts(problem: Problem, ctx: SearchContext, cfg: DVTSConfig) -> SearchResult:
    heads = [Path() for _ in range(cfg.subtrees)]
    spent = 0
    for _ in range(cfg.max_steps):
        live = [i for i, h in enumerate(heads) if not h.finished]
        if not live:
            break
        groups, tokens = expand(ctx, problem, [heads[i] for i in live], cfg.expansions)
        spent += tokens
        score_paths(ctx, problem, [c for g in groups for c in g], cfg.scorer, cfg.aggregation)
        for i, group in zip(live, groups):
            heads[i] = max(group, key=lambda c: c.score)
    pool = [h for h in heads if h.finished] or heads
    best = max(pool, key=lambda p: p.score)
    text = best.text(ctx.separator)
    return SearchResult(
        answer=extract(text), text=text, tokens_spent=spent,
        details={"finished": sum(h.finished for h in heads), "score": best.score,
                 "subtree_answers": [extract(h.text(ctx.separator)) for h in heads]},
    )
