"""The rollout interface every generation engine implements.

Engines take prompt token ids and return completion token ids (never re-tokenized text),
so the trainer scores and trains on exactly the tokens that were sampled.
Shapes: B prompts, G samples per prompt, N = B*G sequences.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Protocol

from rlvr.rollout.sampling import SamplingConfig

if TYPE_CHECKING:  # the recipe parser imports this module and must not load torch
    import torch


@dataclass
class SamplingParams(SamplingConfig):
    """What an engine samples with: a stage's `SamplingConfig` (defaults there) and a seed."""

    seed: int | None = None
    """Seed of this generate call's sampling; None = the global RNG as it stands."""

    @classmethod
    def of(cls, config: SamplingConfig, **changes) -> "SamplingParams":
        """`config`'s fields (with `changes`, e.g. seed or temperature=0) as engine parameters."""
        values = {f: getattr(config, f) for f in SamplingConfig.__dataclass_fields__}
        return cls(**{**values, "stop": list(config.stop), **changes})


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


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """`model` in eval mode for the block, its mode restored after. Sampling and the log-probs of
    what was sampled must come from one policy: in train mode a LoRA adapter's dropout would draw
    a new mask per call (and a CUDA graph captured then would replay one)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
