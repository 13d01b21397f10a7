"""The rollout's prompts: encoded by `rlvr.tasks.prompts.PromptFormat` (template, instruction,
left-truncation to `max_prompt_length`) as every other stage encodes them, and checked so that
prompt + max_new_tokens fits the model's context (`config.max_position_embeddings`).
Unset, the cap is the context minus max_new_tokens.

Truncated prompts are counted per step (`prompts/truncated`) and warned about once per run.
"""
from __future__ import annotations

import warnings

from rlvr.tasks.prompts import PromptFormat
from rlvr.trainer.config import GRPOConfig
from rlvr.trainer.metrics import reduce_sum


def context_limit(model) -> int | None:
    """The model's longest sequence in tokens (`config.max_position_embeddings`), None if unknown."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return limit if isinstance(limit, int) and limit > 0 else None


def prompt_cap(max_prompt_length: int | None, max_new_tokens: int, limit: int | None) -> int | None:
    """The prompt length cap in effect: `max_prompt_length`, or when unset the model's context
    minus the completion budget (a huge prompt is cut to what the model can read instead of
    being run whole); None when neither is known."""
    if max_prompt_length is not None or limit is None:
        return max_prompt_length
    return max(limit - max_new_tokens, 1)


def check_context(cfg: GRPOConfig, limit: int | None) -> None:
    """Fail at the start of training when no prompt, or no prompt of max_prompt_length tokens,
    can be followed by max_new_tokens within the model's context. `cfg`: any options with a
    `sampling` block and `max_prompt_length` (also the eval and rejection_sampling stages')."""
    if limit is None:
        return
    new = cfg.sampling.max_new_tokens
    if new >= limit:
        raise ValueError(f"max_new_tokens ({new}) leaves no room for a prompt in the "
                         f"model's context (max_position_embeddings={limit}); lower max_new_tokens")
    if cfg.max_prompt_length is not None and cfg.max_prompt_length + new > limit:
        raise ValueError(
            f"max_prompt_length ({cfg.max_prompt_length}) + max_new_tokens ({new}) = "
            f"{cfg.max_prompt_length + new} exceeds the model's max_position_embeddings "
            f"({limit}); set max_prompt_length <= {limit - new} or lower max_new_tokens")


class PromptEncoder:
    """Prompt token ids for a list of examples; counts the prompts it truncated since the last
    `take_metrics`."""

    def __init__(self, tokenizer, cfg: GRPOConfig, limit: int | None):
        check_context(cfg, limit)
        self.tokenizer = tokenizer
        self.format = PromptFormat(cfg.template, cfg.instruction)
        self.max_new_tokens = cfg.sampling.max_new_tokens
        self.max_prompt_length = prompt_cap(cfg.max_prompt_length, self.max_new_tokens, limit)
        self.limit = limit
        self.seen = self.truncated = 0
        self.warned = False

    def encode(self, examples) -> list[list[int]]:
        out = []
        for ex in examples:
            ids, full_length = self.format.encode(ex, self.tokenizer, self.max_prompt_length)
            if len(ids) < full_length:
                self.truncated += 1
                self._warn_once(full_length)
            self._check_fits(len(ids))
            out.append(ids)
        self.seen += len(examples)
        return out

    def take_metrics(self, acc) -> dict[str, float]:
        """`prompts/truncated`: share of the prompts encoded since the last call (every process)
        that were left-truncated. A collective: every process calls it once per step."""
        seen, truncated = reduce_sum(acc, [float(self.seen), float(self.truncated)])
        self.seen = self.truncated = 0
        return {"prompts/truncated": truncated / max(seen, 1.0)}

    def _warn_once(self, length: int) -> None:
        if not self.warned:
            self.warned = True
            warnings.warn(f"a prompt of {length} tokens was left-truncated to max_prompt_length="
                          f"{self.max_prompt_length} (its last tokens kept); the share per step is "
                          "logged as prompts/truncated (warned once)")

    def _check_fits(self, length: int) -> None:
        # with max_prompt_length set, check_context already guaranteed it
        if self.limit is not None and length + self.max_new_tokens > self.limit:
            raise ValueError(
                f"a prompt of {length} tokens + max_new_tokens ({self.max_new_tokens}) = "
                f"{length + self.max_new_tokens} exceeds the model's max_position_embeddings "
                f"({self.limit}); set max_prompt_length <= {self.limit - self.max_new_tokens} "
                "(keeps each prompt's last tokens) or lower max_new_tokens")
