"""Cutting a completion: at the first EOS of any of the model's EOS ids (the earliest wins, whatever
their order), else after the first stop string, else the whole row, not ended."""
from __future__ import annotations

from rlvr.models.char_tokenizer import build_char_tokenizer
from rlvr.rollout.tokens import cut_completion


def test_cut_at_the_earliest_of_several_eos_ids():
    tok = build_char_tokenizer()
    row = [5, 6, 9, 7, 3, 8, 3]
    assert cut_completion(row, [3, 9], tok, []) == ([5, 6, 9], True)
    assert cut_completion(row, [9, 3], tok, []) == ([5, 6, 9], True)
    assert cut_completion(row, [3], tok, []) == ([5, 6, 9, 7, 3], True)
    assert cut_completion([3], [3], tok, []) == ([3], True)


def test_no_eos_keeps_the_row_not_ended():
    tok = build_char_tokenizer()
    assert cut_completion([5, 6, 7], [3], tok, []) == ([5, 6, 7], False)
    assert cut_completion([5, 6, 7], [], tok, []) == ([5, 6, 7], False)
    assert cut_completion([], [3], tok, []) == ([], False)


def test_stop_string_cuts_before_a_later_eos():
    tok = build_char_tokenizer()
    ids = tok("ab;cd")["input_ids"] + [tok.eos_token_id]
    cut, ended = cut_completion(ids, [tok.eos_token_id], tok, [";"])
    assert ended and tok.decode(cut, skip_special_tokens=True) == "ab;"
