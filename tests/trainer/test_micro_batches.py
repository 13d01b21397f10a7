"""The update's micro-batches: a token budget groups rows longest first within the budget, every
process runs as many, and a micro-batch's narrow forward scores its completions as the full-width one."""
import pytest
import torch

from rlvr.trainer.batch import Samples, build_train_batch, completion_hidden
from rlvr.trainer.micro_batches import columns, halved, micro_batches, part, split_runs, token_runs

from grpo_fixtures import tiny_policy

PROMPTS = [3, 5, 2, 4, 3, 6, 2, 5]
COMPLETIONS = [9, 1, 4, 12, 0, 3, 7, 2]  # one empty completion


def _batch() -> Samples:
    ids = lambda k, start: [(start + j) % 20 + 3 for j in range(k)]  # noqa: E731
    n = len(PROMPTS)
    samples = Samples(examples=[None] * n, prompt_ids=[ids(p, i) for i, p in enumerate(PROMPTS)],
                      completion_ids=[ids(c, 7 * i) for i, c in enumerate(COMPLETIONS)], texts=[""] * n,
                      truncated=[False] * n, rewards=[0.0] * n, per_verifier={}, correct=[False] * n)
    return build_train_batch(samples, pad_id=0, device="cpu", mask_truncated=False)


def _cost(run, packing):
    if packing:
        return sum(PROMPTS[i] + COMPLETIONS[i] for i in run)
    return len(run) * (max(PROMPTS[i] for i in run) + max(COMPLETIONS[i] for i in run))


@pytest.mark.parametrize("packing", [False, True])
@pytest.mark.parametrize("budget", [1, 16, 30, 1000])
def test_runs_hold_every_row_once_longest_first_within_the_budget(budget, packing):
    runs = token_runs(PROMPTS, COMPLETIONS, budget, packing)
    assert sorted(i for run in runs for i in run) == list(range(len(PROMPTS)))
    order = [i for run in runs for i in run]
    lengths = [PROMPTS[i] + COMPLETIONS[i] for i in order]
    assert lengths == sorted(lengths, reverse=True)
    for run in runs:
        assert len(run) == 1 or _cost(run, packing) <= budget, (run, budget)
    if budget == 1000:
        assert len(runs) == 1
    if budget == 1:
        assert len(runs) == len(PROMPTS)  # every row over the budget runs alone


def test_padded_runs_count_the_width_packed_ones_the_tokens():
    # rows 3 (4 + 12) and 0 (3 + 9): padded 2 x (4 + 12) = 32, packed 16 + 12 = 28
    assert token_runs(PROMPTS, COMPLETIONS, 30, packing=True)[0] == [3, 0]
    assert token_runs(PROMPTS, COMPLETIONS, 30, packing=False)[0] == [3]


def test_runs_are_split_to_the_count_of_another_process():
    runs = split_runs([[0, 1, 2, 3, 4], [5], [6, 7]], 5)
    assert len(runs) == 5 and sorted(i for r in runs for i in r) == list(range(8))
    with pytest.raises(RuntimeError, match="another process runs 4 micro-batches and this one has only 3 rows"):
        split_runs([[0], [1, 2]], 4)


def test_a_narrow_micro_batch_scores_its_completions_as_the_whole_batch():
    model = tiny_policy().model.eval()
    batch = _batch()
    with torch.no_grad():
        full = completion_hidden(model, batch)  # (N, T, H)
        groups = micro_batches(batch, 0, 24, packing=False)
        assert len(groups) > 2
        for mb in groups:
            narrow = part(batch, mb)
            assert narrow.input_ids.shape[1] == mb.prompt_width + mb.completion_width < batch.input_ids.shape[1]
            hidden = completion_hidden(model, narrow)
            mask = narrow.mask.bool()
            torch.testing.assert_close(hidden[mask], columns(full, mb)[mask], atol=1e-5, rtol=1e-5)
            assert torch.equal(narrow.targets[mask], columns(batch.targets, mb)[mask])


def test_row_micro_batches_are_consecutive_slices():
    batch = _batch()
    groups = micro_batches(batch, 3, 0, packing=False)
    assert [g.rows for g in groups] == [slice(0, 3), slice(3, 6), slice(6, 8)]
    assert [g.completion_width for g in groups] == [9, 12, 7]
    assert [g.prompt_width for g in groups] == [5, 6, 5]


@pytest.mark.parametrize("packing", [False, True])
def test_halving_after_an_out_of_memory_error_shrinks_every_time_and_ends_at_single_rows(packing):
    # split_on_oom's re-split: the largest multi-row micro-batch costs less after each halving (as the
    # budget counts: padded width or packed tokens), so the loop ends, with every row once
    batch = _batch()
    groups = micro_batches(batch, 0, 0, packing)
    costs = []
    for _ in range(len(PROMPTS)):  # each halving must make progress: at most one per row
        assert sorted(i for g in groups for i in g.indices) == list(range(len(PROMPTS)))
        assert all(g.tokens == _cost(g.indices, packing) for g in groups)
        costs.append(max(_cost(g.indices, packing) for g in groups if len(g.indices) > 1) if len(groups) < 8 else 0)
        split = halved(batch, groups, packing)
        if split is None:
            break
        groups, budget = split
        assert all(len(g.indices) == 1 or _cost(g.indices, packing) <= budget for g in groups)
    assert split is None, costs
    assert costs == sorted(costs, reverse=True) and len(set(costs)) == len(costs), costs
