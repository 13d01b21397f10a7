"""pass@k, majority vote and maj@k against brute force and hand-checked cases."""
import itertools

import pytest

from rlvr.eval import group_answers, maj_at_k, majority_vote, pass_at_k, vote_accuracy


def brute_force_pass_at_k(flags: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(range(len(flags)), k))
    return sum(any(flags[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_equals_enumeration_over_all_subsets(n):
    for c in range(n + 1):
        flags = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(flags, k), abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    # C(1000, 500) overflows a float; the product form does not.
    value = pass_at_k(1000, 3, 500)
    assert 0.0 < value < 1.0
    assert value == pytest.approx(1 - (500 * 499 * 498) / (1000 * 999 * 998))


@pytest.mark.parametrize(
    "args, match",
    [
        ((0, 0, 1), "n must be >= 1"),
        ((5, 6, 1), "c must be in"),
        ((5, 2, 0), "k must be in"),
        ((5, 2, 6), "k must be in"),
    ],
)
def test_pass_at_k_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        pass_at_k(*args)


def test_majority_vote_groups_by_verifier_equivalence():
    # "0.5" and "\frac{1}{2}" are one answer: together they outvote "3" twice over.
    result = majority_vote(["3", "0.5", "\\frac{1}{2}", "3", "1/2", None])
    assert result.answer == "0.5"
    assert result.share == pytest.approx(3 / 5)


def test_weighted_vote_lets_weights_overturn_the_count():
    answers = ["0.5", "\\frac{1}{2}", "7"]
    assert majority_vote(answers).answer == "0.5"
    weighted = majority_vote(answers, weights=[0.1, 0.1, 0.9])
    assert weighted.answer == "7"
    assert weighted.share == pytest.approx(0.9 / 1.1)


def test_majority_vote_with_no_answers():
    result = majority_vote([None, "  "], equivalent=str.__eq__)
    assert result.answer is None and result.share == 0.0


def test_majority_vote_rejects_mismatched_weights():
    with pytest.raises(ValueError, match="2 weights for 3 answers"):
        majority_vote(["1", "2", "3"], weights=[1, 2], equivalent=str.__eq__)


def test_group_answers_calls_equivalence_once_per_new_string():
    calls = []

    def eq(a, b):
        calls.append((a, b))
        return a == b

    ids = group_answers(["1", "1", "2", "1", None, "2"], equivalent=eq)
    assert ids == [0, 0, 1, 0, -1, 1]
    assert calls == [("1", "2")]


def test_vote_accuracy_splits_ties():
    assert vote_accuracy([0, 1], [True, False]) == 0.5
    assert vote_accuracy([0, 0, 1], [True, True, False]) == 1.0
    assert vote_accuracy([-1, -1], [False, False]) == 0.0


def test_maj_at_k_equals_enumeration():
    answers = ["2", "3", "3", "2", "2", "4"]
    correct = [a == "2" for a in answers]
    ids = group_answers(answers, equivalent=str.__eq__)
    for k in range(1, len(answers) + 1):
        subsets = list(itertools.combinations(range(len(answers)), k))
        expected = sum(vote_accuracy([ids[i] for i in s], [correct[i] for i in s]) for s in subsets) / len(subsets)
        assert maj_at_k(answers, correct, k, equivalent=str.__eq__) == pytest.approx(expected)
    assert maj_at_k(answers, correct, 6, equivalent=str.__eq__) == 1.0
    assert maj_at_k(answers, correct, 1, equivalent=str.__eq__) == pytest.approx(3 / 6)
