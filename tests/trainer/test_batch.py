"""The training batch layout: [left-padded prompt | right-padded completion] with explicit
positions. The log-probs the loss sees (hidden states at P-1+t, times the lm_head weight) must equal
the model's own log-softmax over each unpadded sequence, for every prompt length in the batch."""
import torch

from rlvr.kernels import token_logprobs
from rlvr.tasks.base import Example
from rlvr.trainer.batch import Samples, build_train_batch, completion_hidden, output_weight

from grpo_fixtures import tiny_policy


def samples(prompts, completions, truncated=None):
    n = len(prompts)
    ex = Example(prompt="p", reference=None, kind="sevens")
    return Samples(examples=[ex] * n, prompt_ids=prompts, completion_ids=completions, texts=[""] * n,
                   truncated=truncated or [False] * n, rewards=[0.0] * n, per_verifier={},
                   correct=[False] * n)


def test_logprobs_from_the_batch_layout_equal_unpadded_forward():
    policy = tiny_policy()
    model, pad = policy.model.eval(), policy.tokenizer.pad_token_id
    prompts = [[10, 11, 12, 13, 14], [20], [30, 31, 32]]
    completions = [[40, 41], [50, 51, 52, 53], [60]]
    batch = build_train_batch(samples(prompts, completions), pad, "cpu", mask_truncated=False)
    assert batch.prompt_width == 5 and tuple(batch.targets.shape) == (3, 4)
    with torch.no_grad():
        hidden = completion_hidden(model, batch)  # (N, T, H)
        logp, _ = token_logprobs(hidden, output_weight(model), batch.targets, mask=batch.mask, backend="torch")
        for i, (p, c) in enumerate(zip(prompts, completions)):
            full = torch.tensor([p + c])
            ref = torch.log_softmax(model(full).logits[0].double(), dim=-1)  # (L, V)
            expected = torch.stack([ref[len(p) - 1 + t, tok] for t, tok in enumerate(c)])
            torch.testing.assert_close(logp[i, :len(c)].double(), expected, rtol=1e-4, atol=1e-5)
            assert batch.mask[i].tolist() == [1.0] * len(c) + [0.0] * (4 - len(c))


def test_truncated_rows_are_masked_only_when_asked():
    s = samples([[5, 6], [7]], [[8, 9, 10], [11]], truncated=[True, False])
    kept = build_train_batch(s, 0, "cpu", mask_truncated=False)
    masked = build_train_batch(s, 0, "cpu", mask_truncated=True)
    assert kept.mask.tolist() == [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    assert masked.mask.tolist() == [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]


def test_select_and_concat_keep_groups_together():
    s = samples([[1], [1], [2], [2]], [[3], [4], [5], [6]])
    picked = s.select_groups([1], group_size=2)
    assert picked.completion_ids == [[5], [6]] and picked.prompt_ids == [[2], [2]]
    both = Samples.concat([picked, s.select_groups([0], 2)])
    assert both.completion_ids == [[5], [6], [3], [4]]
