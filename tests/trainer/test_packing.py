"""Packed update forward (`packing: true`): sequences end to end in rows with their own positions
give the padded layout's hidden states and gradients, through the mask path (sdpa, eager), a
varlen attention that reads only the sequence boundaries (as flash attention does), and a whole
GRPO step; a bad row size fails when the config is built."""
import json
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from rlvr.config import from_dict
from rlvr.tasks.base import Example
from rlvr.trainer import GRPOConfig, run_grpo
from rlvr.trainer.batch import Samples, build_train_batch, completion_hidden
from rlvr.trainer.packing import first_fit, pack, packed_completion_hidden

from grpo_fixtures import SevensTask, lora_policy, small_config, tiny_policy

PROMPTS = [[10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20], [21], [22, 23, 24], [25, 26], [27, 28, 29, 30]]
COMPLETIONS = [[40, 41], [42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53], [54], [], [55, 56, 57]]
"""Very different prompt and completion lengths (one completion empty)."""


def ragged_batch(pad_id: int):
    n = len(PROMPTS)
    ex = Example(prompt="p", reference=None, kind="sevens")
    s = Samples(examples=[ex] * n, prompt_ids=PROMPTS, completion_ids=COMPLETIONS, texts=[""] * n,
                truncated=[False] * n, rewards=[0.0] * n, per_verifier={}, correct=[False] * n)
    return build_train_batch(s, pad_id, "cpu", mask_truncated=False)


def real_completion(batch) -> torch.Tensor:
    """(N, T) True on completion tokens (padding False)."""
    return batch.attention_mask[:, batch.prompt_width:].bool()


def varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                     cu_seq_lens_q=None, **kwargs):
    """Causal attention within each segment of the flattened rows, from cu_seq_lens alone (no mask
    reaches it: transformers builds none for an attention it does not know)."""
    assert attention_mask is None and cu_seq_lens_q is not None
    b, h, length, d = query.shape
    flat = lambda x: x.transpose(1, 2).reshape(b * length, x.shape[1], d)  # noqa: E731
    q, k, v = flat(query), flat(key), flat(value)
    k, v = (x.repeat_interleave(h // x.shape[1], dim=1) for x in (k, v))
    bounds = cu_seq_lens_q.tolist()
    parts = [F.scaled_dot_product_attention(q[s:e].transpose(0, 1), k[s:e].transpose(0, 1), v[s:e].transpose(0, 1),
                                            is_causal=True, scale=scaling).transpose(0, 1)
             for s, e in zip(bounds[:-1], bounds[1:])]
    assert bounds[-1] == b * length  # every token (row tails too) is in a segment
    return torch.cat(parts).reshape(b, length, h, d), None


AttentionInterface.register("test_varlen", varlen_attention)


def test_first_fit_packs_longest_first_and_isolates_long_sequences():
    assert first_fit([3, 9, 2, 5, 4], cap=8) == [[1], [3, 0], [4, 2]]
    assert first_fit([1, 1, 1], cap=8) == [[0, 1, 2]]


def test_row_layout_restarts_positions_and_maps_completion_tokens():
    batch = ragged_batch(pad_id=0)
    rows = pack(batch, row_tokens=8)
    lengths = [len(p) + max(len(c) - 1, 0) for p, c in zip(PROMPTS, COMPLETIONS)]
    assert max(lengths) > 8 and rows.input_ids.shape[0] > 2  # the cap splits, and one sequence exceeds it
    flat_ids = torch.cat([rows.input_ids.reshape(-1), torch.tensor([-1])])
    # one column after the state predicting completion token t sits token t; the first predictor is the prompt's end
    for i, comp in enumerate(COMPLETIONS):
        for t, tok in enumerate(comp[:-1]):
            assert flat_ids[rows.source[i, t] + 1].item() == tok
        if comp:
            assert flat_ids[rows.source[i, 0]].item() == PROMPTS[i][-1]
    segments = rows.cu_seq_lens.diff().tolist()
    assert sum(segments) == rows.input_ids.numel() and rows.max_length == max(segments)
    assert not Counter(lengths) - Counter(segments)  # every sequence is one segment (the rest: row tails)
    for start, seg in zip(rows.cu_seq_lens[:-1].tolist(), segments):  # positions 0..len-1 per segment
        assert rows.position_ids.reshape(-1)[start:start + seg].tolist() == list(range(seg))


@pytest.mark.parametrize("attn", ["sdpa", "eager", "test_varlen"])
@pytest.mark.parametrize("row_tokens", [8, 0, 64])
def test_packed_hidden_states_equal_padded(attn, row_tokens):
    policy = tiny_policy()
    model = policy.model.eval()
    batch = ragged_batch(policy.tokenizer.pad_token_id)
    real = real_completion(batch)
    with torch.no_grad():
        padded = completion_hidden(model, batch)  # sdpa on the padded layout: the reference
        model.set_attn_implementation(attn)
        packed = packed_completion_hidden(model, batch, row_tokens)
    assert packed.shape == padded.shape
    torch.testing.assert_close(packed[real], padded[real], atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(packed[~real]) == 0


def test_attention_across_sequences_would_be_caught():
    # the same rows with one running position (no restart) attend across sequences: the check
    # above must see that
    policy = tiny_policy()
    model = policy.model.eval()
    batch = ragged_batch(policy.tokenizer.pad_token_id)
    rows = pack(batch, row_tokens=64)
    with torch.no_grad():
        joined = model(input_ids=rows.input_ids, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
        flat = torch.cat([joined.reshape(-1, joined.shape[-1]), joined.new_zeros(1, joined.shape[-1])])
        wrong = flat[rows.source.reshape(-1)].reshape(*batch.targets.shape, -1)
        padded = completion_hidden(model, batch)
    real = real_completion(batch)
    assert (wrong[real] - padded[real]).abs().max() > 1e-3


@pytest.mark.parametrize("attn", ["sdpa", "test_varlen"])
def test_packed_gradients_equal_padded(attn):
    policy = tiny_policy()
    model = policy.model
    batch = ragged_batch(policy.tokenizer.pad_token_id)
    probe = torch.randn(*batch.targets.shape, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    weights = batch.mask[..., None] * probe  # a loss over the completion tokens only

    def grads(hidden_fn):
        model.zero_grad(set_to_none=True)
        (hidden_fn() * weights).sum().backward()
        return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    padded = grads(lambda: completion_hidden(model, batch))
    model.set_attn_implementation(attn)
    packed = grads(lambda: packed_completion_hidden(model, batch, row_tokens=8))
    assert padded.keys() == packed.keys() and len(padded) > 5
    for k in padded:
        torch.testing.assert_close(packed[k], padded[k], atol=1e-5, rtol=1e-4, msg=k)


def run(tmp_path, name, make_policy=tiny_policy, **overrides):
    policy = make_policy()
    out = tmp_path / name
    run_grpo(policy, SevensTask(), small_config(**overrides), out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, {k: v.detach().clone() for k, v in policy.model.named_parameters()}


def test_grpo_steps_with_packing_equal_padded(tmp_path):
    # stop strings: completions of different lengths; beta and num_iterations: the reference and
    # old log-prob forwards pack too; micro-batches: packing per micro-batch
    settings = dict(steps=2, stop=["1", "2", "3", "a", "e"], beta=0.1, num_iterations=2, micro_batch_size=5)
    padded, padded_params = run(tmp_path, "padded", **settings)
    # 32 tokens: two or three sequences share a row
    packed, packed_params = run(tmp_path, "packed", packing=True, packing_row_tokens=32, **settings)
    assert padded[0]["completions/mean_length"] < 6  # lengths vary
    for before, after in zip(padded, packed):
        for key in ("loss/total", "grad_norm", "kl/mean", "ratio/mean", "entropy/mean", "reward/mean"):
            assert after[key] == pytest.approx(before[key], rel=1e-4, abs=1e-6), key
    assert padded[-1]["kl/mean"] > 0 and padded[0]["grad_norm"] > 0
    init = dict(tiny_policy().model.named_parameters())
    for k, v in padded_params.items():
        assert (v - init[k]).abs().max() > 1e-2  # every weight moved about lr x updates
        # Adam turns float noise on near-zero gradients (k_proj.bias) into steps of ~1e-5
        torch.testing.assert_close(packed_params[k], v, atol=2e-4, rtol=0, msg=k)


def test_lora_steps_with_packing_equal_padded(tmp_path):
    # peft wrapper, gradient checkpointing, and the adapter-disabled base as the KL reference
    settings = dict(steps=2, stop=["1", "2", "3", "a", "e"], beta=0.1, learning_rate=5e-2)
    padded, padded_params = run(tmp_path, "padded", lora_policy, **settings)
    packed, packed_params = run(tmp_path, "packed", lora_policy, packing=True, packing_row_tokens=32, **settings)
    assert padded[-1]["kl/mean"] > 0
    for before, after in zip(padded, packed):
        for key in ("loss/total", "grad_norm", "kl/mean", "entropy/mean"):
            assert after[key] == pytest.approx(before[key], rel=1e-4, abs=1e-6), key
    for k, v in padded_params.items():
        torch.testing.assert_close(packed_params[k], v, atol=2e-4, rtol=0, msg=k)


@pytest.mark.parametrize("value", [-1, -8])
def test_negative_row_tokens_fail_when_the_config_is_built(value):
    with pytest.raises(ValueError, match="packing_row_tokens must be >= 0"):
        from_dict(GRPOConfig, {"packing": True, "packing_row_tokens": value})
    assert from_dict(GRPOConfig, {}).packing is False  # off unless asked
