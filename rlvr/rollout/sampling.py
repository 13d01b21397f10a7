"""SamplingConfig: how completions are sampled, the one place its defaults live.

Every stage that samples (grpo, eval, rejection_sampling, self_improve's rounds) holds one as its
`sampling` block; a recipe's top-level `sampling:` fills the keys a stage leaves out, and a
stage's own keys win (`rlvr.config.from_dict`'s `defaults`). The flat keys (`max_new_tokens: 64`
on a stage) are shorthand for `sampling.max_new_tokens` (`SAMPLING_SHORTHAND`). Engines take
`rlvr.rollout.base.SamplingParams`: these fields plus a seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class SamplingConfig:
    """The sampling distribution and length cap of a stage."""

    max_new_tokens: int = 256
    """Completion length cap (tokens); a completion that hits it is `truncated`."""
    temperature: float = 1.0
    """Sampling temperature (0 = greedy)."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1.0 = off."""
    top_k: int = 0
    """Top-k sampling; 0 = off."""
    stop: list[str] = field(default_factory=list)
    """Stop strings; a completion ends after the first one (included in the text), e.g. "</answer>"."""

    def __post_init__(self) -> None:
        # "field: message": rlvr.config.from_dict turns it into the dotted key (stages.7.sampling.top_p)
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k: must be >= 0 (0 = off), got {self.top_k}")


SAMPLING_SHORTHAND = {f.name: "sampling" for f in fields(SamplingConfig)}
"""A stage's flat sampling keys and the block they belong to (`from_dict` moves them there)."""
