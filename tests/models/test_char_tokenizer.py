"""The character tokenizer: exact round trips of every generator's text, one token per R1 tag."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from rlvr.models import build_char_tokenizer
from rlvr.tasks import make_task, render_prompt


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


@pytest.mark.parametrize("name", ["arithmetic", "linear_equation", "countdown", "python_functions"])
def test_generator_text_round_trips_exactly(tokenizer, name):
    for level in range(1, 6):
        for ex in make_task(name, seed=0, difficulty=level).sample(20):
            for text in (render_prompt(ex), ex.solution, render_prompt(ex, tokenizer, "r1_chat") + ex.solution):
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                assert tokenizer.unk_token_id not in ids, text
                assert tokenizer.decode(ids) == text


def test_tags_are_single_tokens_and_characters_are_one_each(tokenizer):
    text = "<think>1 + 2</think><answer>3</answer>"
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
    assert tokens == ["<think>", "1", " ", "+", " ", "2", "</think>", "<answer>", "3", "</answer>"]
    # Tags are not special: skipping special tokens keeps them, and drops eos/pad.
    ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id, tokenizer.pad_token_id]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_unknown_characters_become_unk(tokenizer):
    assert tokenizer("é")["input_ids"] == [tokenizer.unk_token_id]


def test_special_tokens_and_left_padding(tokenizer):
    assert {tokenizer.pad_token, tokenizer.eos_token, tokenizer.bos_token, tokenizer.unk_token} == {
        "<pad>", "<eos>", "<bos>", "<unk>"}
    batch = tokenizer(["1+2", "10+20"], padding=True)
    assert batch["input_ids"][0][:2] == [tokenizer.pad_token_id] * 2
    assert batch["attention_mask"][0] == [0, 0, 1, 1, 1]


def test_two_builds_agree(tokenizer):
    assert build_char_tokenizer().get_vocab() == tokenizer.get_vocab()


def test_save_and_load_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "Q: 12*3=?\nA: <think>12*3=36</think><answer>36</answer>"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text
    assert loaded.padding_side == "left" and loaded.pad_token == "<pad>"
    messages = [{"role": "user", "content": "1+1=?"}]
    assert loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == "Q: 1+1=?\nA: "
