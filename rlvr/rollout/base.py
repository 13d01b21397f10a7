"""The rollout interface every generation engine implements.

Engines take prompt token ids and return completion token ids (never re-tokenized text),
so the trainer scores and trains on exactly the tokens that were sampled.
Shapes: B prompts, G samples per prompt, N = B*G sequences.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    """Completion length cap (tokens). A completion that hits it is marked truncated."""
    temperature: float = 1.0
    """0 means greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k."""
    stop: list[str] = field(default_factory=list)
    """Stop strings; the completion ends after the first one (included in the text)."""
    seed: int | None = None


@dataclass
class Rollout:
    """N = B*G sampled completions; sequence i belongs to prompt i // G."""

    prompt_ids: list[list[int]]
    """(B) prompt token ids, one list per prompt."""
    completion_ids: list[list[int]]
    """(N) completion token ids, EOS included when the model emitted it."""
    texts: list[str]
    """(N) decoded completions (for verifiers and logging only)."""
    truncated: list[bool]
    """(N) True when the completion hit max_new_tokens without EOS or a stop string."""
    logprobs: list[list[float]] | None = None
    """(N) sampling log-probs of each completion token, when the engine provides them."""

    @property
    def lengths(self) -> list[int]:
        return [len(c) for c in self.completion_ids]


class RolloutEngine(Protocol):
    def generate(self, prompt_ids: list[list[int]], group_size: int, params: SamplingParams) -> Rollout: ...
