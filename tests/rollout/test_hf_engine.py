"""HFEngine on a tiny random Qwen2 with the character tokenizer: greedy decoding equals a manual
argmax loop (so left padding and grouping are right), stop strings end completions on token
boundaries, truncation flags, seeding."""
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from rlvr.models import build_char_tokenizer
from rlvr.rollout import SamplingParams, make_engine


@pytest.fixture(scope="module")
def tiny():
    tok = build_char_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg).eval()
    return model, tok


def manual_greedy(model, prompt, max_new, eos):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(max_new):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
            if ids[-1] == eos:
                break
    return ids[len(prompt):]


def test_greedy_matches_manual_argmax_with_left_padding_and_groups(tiny):
    model, tok = tiny
    prompts = [tok("Q: 12+30\nA: ")["input_ids"], tok("x")["input_ids"], tok("hello there")["input_ids"]]
    engine = make_engine("hf", model, tok)
    out = engine.generate(prompts, group_size=2, params=SamplingParams(max_new_tokens=10, temperature=0))
    assert len(out.completion_ids) == 6
    for i, p in enumerate(prompts):
        expected = manual_greedy(model, p, 10, tok.eos_token_id)
        assert out.completion_ids[2 * i] == expected  # prompt i's group is rows 2i, 2i+1
        assert out.completion_ids[2 * i + 1] == expected
        assert out.texts[2 * i] == tok.decode(expected, skip_special_tokens=True)
        ended = bool(expected) and expected[-1] == tok.eos_token_id
        assert out.truncated[2 * i] == (not ended and len(expected) == 10)
    assert out.lengths == [len(c) for c in out.completion_ids]


def test_stop_string_cuts_on_token_boundary_and_is_not_truncated(tiny):
    model, tok = tiny
    engine = make_engine("hf", model, tok)
    prompt = [tok("abc")["input_ids"]]
    free = engine.generate(prompt, 1, SamplingParams(max_new_tokens=12, temperature=0)).completion_ids[0]
    text = tok.decode(free, skip_special_tokens=True)
    assert len(text) >= 4, "the tiny model should write a few characters"
    stop = text[2:4]  # a string the greedy completion contains
    out = engine.generate(prompt, 1, SamplingParams(max_new_tokens=12, temperature=0, stop=[stop]))
    ids = out.completion_ids[0]
    assert out.texts[0].endswith(stop) and stop not in out.texts[0][:-1]
    assert ids == free[:len(ids)]  # a prefix of the sampled ids: nothing re-tokenized
    assert out.truncated == [False]


def test_truncated_when_max_new_tokens_hit(tiny):
    model, tok = tiny
    engine = make_engine("hf", model, tok)
    out = engine.generate([tok("zz")["input_ids"]], 4, SamplingParams(max_new_tokens=3, temperature=1.0, seed=0))
    for ids, trunc in zip(out.completion_ids, out.truncated):
        assert len(ids) <= 3
        assert trunc == (len(ids) == 3 and ids[-1] != tok.eos_token_id)


def test_seeded_sampling_repeats_and_differs_across_seeds(tiny):
    model, tok = tiny
    engine = make_engine("hf", model, tok)
    p = [tok("seed")["input_ids"]]
    a = engine.generate(p, 4, SamplingParams(max_new_tokens=8, temperature=1.0, seed=3)).completion_ids
    b = engine.generate(p, 4, SamplingParams(max_new_tokens=8, temperature=1.0, seed=3)).completion_ids
    c = engine.generate(p, 4, SamplingParams(max_new_tokens=8, temperature=1.0, seed=4)).completion_ids
    assert a == b and a != c
    assert len({tuple(x) for x in a}) > 1, "G samples of one prompt should differ at temperature 1"


def test_unknown_engine_lists_valid_names(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="valid: .*hf"):
        make_engine("nope", model, tok)


def test_bad_sampling_params_raise(tiny):
    model, tok = tiny
    engine = make_engine("hf", model, tok)
    with pytest.raises(ValueError, match="top_p"):
        engine.generate([[5]], 2, SamplingParams(max_new_tokens=2, top_p=0.0))


@pytest.mark.parametrize("knob", [{"top_k": 1}, {"top_p": 1e-6}])
def test_top_k_and_top_p_narrow_sampling_to_greedy(tiny, knob):
    model, tok = tiny
    engine = make_engine("hf", model, tok)
    p = [tok("narrow")["input_ids"]]
    greedy = engine.generate(p, 1, SamplingParams(max_new_tokens=8, temperature=0)).completion_ids[0]
    sampled = engine.generate(p, 4, SamplingParams(max_new_tokens=8, temperature=1.0, seed=0, **knob))
    assert all(c == greedy for c in sampled.completion_ids)
    free = engine.generate(p, 4, SamplingParams(max_new_tokens=8, temperature=1.0, seed=0))
    assert any(c != greedy for c in free.completion_ids)  # without the knob, sampling differs


def _forward_logprobs(model, prompt, completion, temperature, top_k=0):
    """Log-probs of `completion` under the sampling distribution, from one forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1:-1].float() / temperature
    if top_k:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None]).squeeze(1)


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 5)])
def test_sampled_logprobs_match_a_forward_pass(tiny, temperature, top_k):
    model, tok = tiny
    prompts = [tok("Q: 12+3=?\nA: ")["input_ids"], tok("7")["input_ids"]]
    out = make_engine("hf", model, tok).generate(
        prompts, 3, SamplingParams(max_new_tokens=10, temperature=temperature, top_k=top_k, seed=1))
    assert out.logprobs is not None
    for i, (ids, lps) in enumerate(zip(out.completion_ids, out.logprobs)):
        assert len(lps) == len(ids)  # cut with the completion (EOS, stop strings, padding)
        want = _forward_logprobs(model, prompts[i // 3], ids, temperature, top_k)
        assert torch.allclose(torch.tensor(lps), want, atol=1e-4), (i, lps, want.tolist())


def test_top_k_one_samples_with_log_prob_zero(tiny):
    model, tok = tiny
    out = make_engine("hf", model, tok).generate([tok("5")["input_ids"]], 2, SamplingParams(max_new_tokens=6, top_k=1))
    assert all(lp == pytest.approx(0.0, abs=1e-6) for row in out.logprobs for lp in row)
