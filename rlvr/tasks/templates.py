"""Prompt templates: how a problem is shown to the model.

| template  | text the model sees                                                          |
|-----------|------------------------------------------------------------------------------|
| `plain`   | `Q: {prompt}\nA: `                                                           |
| `r1`      | `{instruction}\nQ: {prompt}\nA: ` (no instruction line when it is empty)      |
| `chat`    | the tokenizer's chat template on one user message, generation prompt added     |
| `r1_chat` | the same, with the instruction after the problem in the user message           |

The default instruction (`R1_INSTRUCTION`, 59 characters) asks for DeepSeek-R1's format. A
character-level model pays for every character of it on every prompt, so pass a shorter one
(`instruction="Think, then answer."`) or `instruction=""` when the model learns the format from
worked solutions anyway. The generators' worked solutions start with `<think>`, so a model
fine-tuned on them continues `A: ` with `<think>...</think><answer>...</answer>`.
"""
from __future__ import annotations

from typing import Any, Callable

from rlvr.registry import Registry
from rlvr.tasks.base import Example

R1_INSTRUCTION = "Think in <think></think>, then answer in <answer></answer>."

TemplateFn = Callable[[Example, Any, str], str]
_TEMPLATES: Registry[TemplateFn] = Registry("prompt template", valid_label="valid templates")


def register_template(name: str) -> Callable[[TemplateFn], TemplateFn]:
    return _TEMPLATES.register(name)


def available_templates() -> list[str]:
    return _TEMPLATES.names()


def render_prompt(example: Example, tokenizer: Any = None, template: str = "r1",
                  instruction: str = R1_INSTRUCTION) -> str:
    """The prompt text for `example` (the completion is generated right after it)."""
    return _TEMPLATES.get(template)(example, tokenizer, instruction)


@register_template("plain")
def _plain(example: Example, tokenizer: Any, instruction: str) -> str:
    return f"Q: {example.prompt}\nA: "


@register_template("r1")
def _r1(example: Example, tokenizer: Any, instruction: str) -> str:
    head = f"{instruction}\n" if instruction else ""
    return f"{head}Q: {example.prompt}\nA: "


def _chat(tokenizer: Any, content: str, template: str) -> str:
    if tokenizer is None:
        raise ValueError(f"prompt template {template!r} needs a tokenizer (its chat template)")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"prompt template {template!r}: the tokenizer has no chat_template; use 'r1' or 'plain'")
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )


@register_template("chat")
def _chat_plain(example: Example, tokenizer: Any, instruction: str) -> str:
    return _chat(tokenizer, example.prompt, "chat")


@register_template("r1_chat")
def _chat_r1(example: Example, tokenizer: Any, instruction: str) -> str:
    # The instruction goes into the user turn, not a system turn: DeepSeek-R1's usage notes
    # advise against a system prompt, and some chat templates have no system role.
    content = f"{example.prompt}\n{instruction}" if instruction else example.prompt
    return _chat(tokenizer, content, "r1_chat")
