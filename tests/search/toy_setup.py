"""A toy policy whose random sampling can hit small answers: no trained model needed.

A tiny randomly initialised Qwen2 (rlvr.models) with the character tokenizer, its output layer
masked so it only writes the digits 1, 3, 5, 7, newlines and EOS. Near-uniform over those, it answers "Q: 3+4"
with the digit 7 now and then, so a search that spends enough samples finds the known answer and
one that spends too few usually does not: a real test of search with a real verifier.
"""
from __future__ import annotations

import torch
from torch import nn

from rlvr.models.char_tokenizer import build_char_tokenizer
from rlvr.models.config import TinyModelConfig
from rlvr.models.tiny import build_tiny_model
from rlvr.rollout import make_engine
from rlvr.search import GenerationConfig, Problem, SearchContext
from rlvr.tasks.base import Example

ALLOWED = "1357\n"
"""Digits the toy may write (7 = 3 + 4 among them), and the step separator."""


def toy_policy(seed: int = 0, allowed=ALLOWED, eos_bias: float = 1.0, boost: dict | None = None):
    """`allowed`: the tokens it may write (a string: its characters); `boost`: token -> extra logit."""
    tokenizer = build_char_tokenizer()
    cfg = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                          max_position_embeddings=256, tie_word_embeddings=False)
    model = build_tiny_model(tokenizer, cfg, seed=seed)
    vocab, hidden = model.lm_head.weight.shape
    head = nn.Linear(hidden, vocab, bias=True)
    head.weight = model.lm_head.weight
    allowed_ids = [tokenizer.convert_tokens_to_ids(t) for t in allowed] + [tokenizer.eos_token_id]
    bias = torch.full((vocab,), -1e4)
    bias[allowed_ids] = 0.0
    bias[tokenizer.eos_token_id] = eos_bias  # short answers: a lone "7" is ~5% of samples
    for token, extra in (boost or {}).items():
        bias[tokenizer.convert_tokens_to_ids(token)] = extra
    head.bias = nn.Parameter(bias, requires_grad=False)
    model.lm_head = head  # sampling never leaves the allowed characters
    model.eval()
    return model, tokenizer


def toy_problem(a: int = 3, b: int = 4) -> Problem:
    example = Example(prompt=f"{a}+{b}", reference=str(a + b), kind="math", difficulty=1, id=f"toy-{a}+{b}")
    return Problem(prompt=f"Q: {a}+{b}\nA: ", example=example)


def toy_context(model, tokenizer, scorers=None, max_new_tokens: int = 4, max_step_tokens: int = 2) -> SearchContext:
    gen = GenerationConfig(temperature=1.0, max_new_tokens=max_new_tokens, max_step_tokens=max_step_tokens,
                           step_separator="\n")
    return SearchContext(make_engine("hf", model, tokenizer), tokenizer, gen, scorers)
