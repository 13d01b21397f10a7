"""Beam search over reasoning steps, guided by a PRM (search-and-learn's `beam_search`).

Each round expands every live beam `expansions` ways (the first round samples
beam_width × expansions first steps from the prompt), scores every candidate with the scorer, and
keeps the `beam_width` best live ones. Candidates that finish are set aside and kept; the search
stops when `beam_width` solutions have finished, nothing is live, or `max_steps` is reached.
The answer is the best-scored finished solution (else the best live one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlvr.search.base import Problem, SearchResult, register_search, require_positive
from rlvr.search.context import SearchContext, extract
from rlvr.search.steps import Path, expand, score_paths


@dataclass
class BeamSearchConfig:
    """Step-level beam search."""

    beam_width: int = 2
    """Beams kept after each step."""
    expansions: int = 4
    """Next steps sampled per beam (the first step: beam_width × expansions from the prompt)."""
    max_steps: int = 8
    """Step limit (rounds of expansion)."""
    scorer: str = "prm"
    """What scores the partial solutions: prm (usual), orm, verifier or judge."""
    aggregation: Literal["last", "min", "prod", "mean"] = "last"
    """How a PRM's step scores become a path score."""

    def validate(self):
        require_positive("beam_search", beam_width=self.beam_width, expansions=self.expansions,
                         max_steps=self.max_steps)


@register_search("beam_search", BeamSearchConfig, "step-level beam search scored by a PRM")
def beam_search(problem: Problem, ctx: SearchContext, cfg: BeamSearchConfig) -> SearchResult:
    live = [Path()]
    finished: list[Path] = []
    spent = rounds = 0
    for rounds in range(1, cfg.max_steps + 1):
        per_beam = cfg.beam_width * cfg.expansions if rounds == 1 else cfg.expansions
        groups, tokens = expand(ctx, problem, live, per_beam)
        spent += tokens
        candidates = [c for g in groups for c in g]
        score_paths(ctx, problem, candidates, cfg.scorer, cfg.aggregation)
        finished += [c for c in candidates if c.finished]
        live = sorted((c for c in candidates if not c.finished), key=lambda c: -c.score)[: cfg.beam_width]
        if len(finished) >= cfg.beam_width or not live:
            break
    pool = finished or live
    best = max(pool, key=lambda p: p.score)
    text = best.text(ctx.separator)
    return SearchResult(
        answer=extract(text), text=text, tokens_spent=spent,
        details={"rounds": rounds, "finished": len(finished), "score": best.score},
    )
