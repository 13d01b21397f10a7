"""The one prompt encoder: a problem -> its prompt text -> its token ids, for every stage and command.

SFT, GRPO, eval, rejection sampling, self-improvement and search all render and tokenize prompts
here, so a model is evaluated on exactly the ids it was trained on. `PromptFormat` is the
recipe-level pair (template, instruction); `encode_text` tokenizes as training does (the
tokenizer's special tokens unless a chat template already starts with BOS); `left_truncate` keeps
a long prompt's end (TRL's rule: the question and the assistant turn are at the end).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlvr.tasks.base import Example
from rlvr.tasks.templates import R1_INSTRUCTION, render_prompt


@dataclass(frozen=True)
class PromptFormat:
    """How a problem is shown to the model."""

    template: str = "r1"
    """`rlvr.tasks.render_prompt` template: plain, r1, chat, r1_chat."""
    instruction: str | None = None
    """Instruction of the r1 templates; None = R1_INSTRUCTION."""

    def render(self, example: Example, tokenizer: Any = None) -> str:
        instruction = R1_INSTRUCTION if self.instruction is None else self.instruction
        return render_prompt(example, tokenizer, template=self.template, instruction=instruction)

    def encode(self, example: Example, tokenizer: Any, max_prompt_length: int | None = None) -> tuple[list[int], int]:
        """(the prompt ids left-truncated to max_prompt_length, the untruncated length)."""
        full = encode_text(tokenizer, self.render(example, tokenizer))
        return left_truncate(full, max_prompt_length), len(full)


def as_format(value: PromptFormat | str) -> PromptFormat:
    """A PromptFormat from itself or from a bare template name (default instruction)."""
    return value if isinstance(value, PromptFormat) else PromptFormat(template=value)


def left_truncate(ids: list[int], max_length: int | None) -> list[int]:
    """The last `max_length` tokens of `ids` (all of them when max_length is None)."""
    return ids if max_length is None or len(ids) <= max_length else ids[-max_length:]


def encode_text(tokenizer: Any, text: str) -> list[int]:
    # Chat templates already start with BOS; plain templates get the tokenizer's special tokens.
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    ids = tokenizer(text, add_special_tokens=add_special)["input_ids"]
    if not ids:
        raise ValueError(f"prompt encodes to no tokens: {text!r}")
    return ids
