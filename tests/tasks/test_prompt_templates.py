"""Prompt templates: plain, r1 (configurable instruction), chat and r1_chat through a chat template."""
from __future__ import annotations

import pytest

from rlvr.models import build_char_tokenizer
from rlvr.tasks import R1_INSTRUCTION, Example, render_prompt

EXAMPLE = Example(prompt="23+58=?", reference="81", kind="math")


def test_plain_and_r1():
    assert render_prompt(EXAMPLE, template="plain") == "Q: 23+58=?\nA: "
    assert render_prompt(EXAMPLE) == f"{R1_INSTRUCTION}\nQ: 23+58=?\nA: "
    assert render_prompt(EXAMPLE, template="r1", instruction="Think, then answer.") == "Think, then answer.\nQ: 23+58=?\nA: "
    # An empty instruction leaves only the problem: the cheapest prompt for a character-level model.
    assert render_prompt(EXAMPLE, template="r1", instruction="") == "Q: 23+58=?\nA: "


def test_r1_instruction_names_both_tags():
    assert "<think></think>" in R1_INSTRUCTION and "<answer></answer>" in R1_INSTRUCTION


def test_chat_templates_use_the_tokenizer():
    tokenizer = build_char_tokenizer()
    assert render_prompt(EXAMPLE, tokenizer, template="chat") == "Q: 23+58=?\nA: "
    assert render_prompt(EXAMPLE, tokenizer, template="r1_chat") == f"Q: 23+58=?\n{R1_INSTRUCTION}\nA: "


def test_chat_template_errors():
    with pytest.raises(ValueError, match="needs a tokenizer"):
        render_prompt(EXAMPLE, template="chat")
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no chat_template"):
        render_prompt(EXAMPLE, tokenizer, template="r1_chat")
    with pytest.raises(ValueError, match="unknown prompt template 'fancy'; valid templates: chat, plain, r1, r1_chat"):
        render_prompt(EXAMPLE, template="fancy")
