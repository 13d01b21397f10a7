"""Rejection sampling keeps distinct, correct, untruncated completions, at most M, shortest first,
and the SFT stage reads what it saved."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from rlvr.pipeline.sampling import Sample, verify_texts
from rlvr.pipeline.stages.rejection_sampling import select_correct
from rlvr.pipeline.stages.sft import training_pairs
from rlvr.tasks.base import Example


def s(text, correct=True, tokens=None, truncated=False):
    return Sample("Q: 2+2=?\nA: ", text, tokens if tokens is not None else len(text), truncated, correct, None)


def test_keeps_correct_distinct_untruncated_shortest_first():
    samples = [
        s("<think>long 2+2=4</think><answer>4</answer>"),
        s("<answer>5</answer>", correct=False),                 # wrong
        s("<think>2+2=4</think><answer>4</answer>"),
        s("  <think>2+2=4</think><answer>4</answer>"),         # duplicate after stripping
        s("<think>2+2=4 ...", truncated=True, tokens=1),        # cut off, never kept
        s("<answer>4</answer>"),
    ]
    kept = select_correct(samples, max_per_problem=2, shortest_first=True)
    assert [k.text for k in kept] == ["<answer>4</answer>", "<think>2+2=4</think><answer>4</answer>"]
    kept = select_correct(samples, max_per_problem=5, shortest_first=False)
    assert [k.text for k in kept] == [samples[0].text, samples[2].text, samples[5].text]


def test_verdicts_come_from_the_verifier_of_each_kind():
    examples = [Example("2+2=?", "4", "math"), Example("3+3=?", "6", "math"),
                Example("make 10", {"numbers": [2, 5], "target": 10}, "countdown")]
    texts = ["<answer>4</answer>", "<answer>7</answer>", "<answer>2*5</answer>"]
    assert [v.correct for v in verify_texts(examples, texts)] == [True, False, True]


def test_sft_reads_the_saved_dataset_and_refuses_a_missing_one(tmp_path):
    from datasets import Dataset

    rows = [{"prompt": "Q: 1+1=?\nA: ", "completion": "<answer>2</answer>", "id": "a", "num_tokens": 18}]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "kept"))
    ctx = SimpleNamespace(stage=SimpleNamespace(dataset_from="rs", name="sft"), dataset_dir=tmp_path / "kept")
    assert training_pairs(ctx, None, None) == [{"prompt": rows[0]["prompt"], "completion": rows[0]["completion"]}]

    ctx.dataset_dir = tmp_path / "none"  # what a stage that kept nothing leaves
    with pytest.raises(RuntimeError, match="kept no correct completion"):
        training_pairs(ctx, None, None)
