"""Pool curves (best-of-N, votes, pass@N by subsampling), compute-optimal choice, tables, plots."""
import itertools
import math

import pytest

from rlvr.eval.curves import (Point, SamplePool, best_of_n_accuracy, compute_optimal, pool_curves, powers_of_two,
                              scorer_auc, vote_scorer_agreement, within_problem_auc)
from rlvr.eval.report import accuracy_table, full_report, plot_curves

POOL = SamplePool(
    difficulty=1,
    group_ids=[0, 1, 0, -1, 2, 1],
    correct=[True, False, True, False, False, False],
    tokens=[4, 6, 8, 10, 12, 14],
    scores={"orm": [0.9, 0.8, 0.1, 0.2, 0.95, 0.3]},
)


def brute(method, pool, n):
    subsets = list(itertools.combinations(range(len(pool.correct)), n))
    total = 0.0
    for s in subsets:
        correct = [pool.correct[i] for i in s]
        if method == "pass@N":
            total += any(correct)
        elif method == "best_of_n[orm]":
            total += best_of_n_accuracy([pool.scores["orm"][i] for i in s], correct)
    return total / len(subsets)


def test_powers_of_two():
    assert powers_of_two(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert powers_of_two(6) == [1, 2, 4]


@pytest.mark.parametrize("method", ["pass@N", "best_of_n[orm]"])
def test_pool_curves_equal_enumeration_when_every_subset_is_drawn(method):
    points = pool_curves([POOL], ns=[1, 2, 4, 6], draws=10_000, by_difficulty=False)
    for p in points:
        if p.method == method:
            assert p.accuracy == pytest.approx(brute(method, POOL, p.n))
    tokens = {p.n: p.tokens for p in points if p.method == "majority"}
    assert tokens[6] == pytest.approx(sum(POOL.tokens))
    assert tokens[1] == pytest.approx(sum(POOL.tokens) / 6)


def test_pool_curves_methods_and_levels():
    other = SamplePool(2, [0, 0, 1, 1, 1, 1], [True, True, False, False, False, False], [1] * 6, {"orm": [0.5] * 6})
    points = pool_curves([POOL, other], ns=[1, 2])
    assert {p.method for p in points} == {"pass@N", "majority", "best_of_n[orm]", "weighted_vote[orm]"}
    assert {p.difficulty for p in points} == {None, 1, 2}
    maj2 = next(p for p in points if p.method == "majority" and p.n == 2 and p.difficulty == 2)
    # Pairs from other: both correct (1 pair) -> 1; both wrong (6) -> 0; mixed (8) -> tie -> 0.5.
    assert maj2.accuracy == pytest.approx((1 + 8 * 0.5) / 15)
    with pytest.raises(ValueError, match="N must be in \\[1, 6\\]"):
        pool_curves([POOL], ns=[8])


def test_compute_optimal_picks_the_best_method_that_fits_each_budget():
    points = [Point("cheap", 1, 0.5, 10, 1), Point("cheap", 4, 0.6, 40, 1), Point("search", 4, 0.8, 60, 1),
              Point("pass@N", 4, 1.0, 40, 1), Point("cheap", 1, 0.9, 10, 2), Point("search", 4, 0.7, 60, 2)]
    rows = compute_optimal(points, budgets=[16, 64])
    pick = {(r["difficulty"], r["budget"]): (r["method"], r["n"]) for r in rows}
    assert pick == {(1, 16): ("cheap", 1), (1, 64): ("search", 4), (2, 16): ("cheap", 1), (2, 64): ("cheap", 1)}


def test_tables_and_plots(tmp_path):
    points = [Point("majority", 1, 0.25, 10.0, None, 4), Point("majority", 2, 0.5, 20.0, None, 4),
              Point("beam", 2, 0.75, 30.0, None, 4)]
    table = accuracy_table(points)
    assert "| majority | 0.250 (10 tok) | 0.500 (20 tok) |" in table
    assert "| beam |  | 0.750 (30 tok) |" in table
    assert "## Compute-optimal choice" in full_report(points, compute_optimal(points))
    for x in ("n", "tokens"):
        path = plot_curves(points, tmp_path / f"{x}.png", x=x)
        assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="x must be"):
        plot_curves(points, tmp_path / "bad.png", x="time")


def test_scorer_auc_compares_correct_and_incorrect_samples_of_the_same_problem():
    # Correct scores 0.9, 0.1; incorrect 0.8, 0.2, 0.95, 0.3 -> wins: 0.9 beats 3 of 4, 0.1 beats none.
    assert scorer_auc([POOL], "orm") == pytest.approx(3 / 8)
    all_wrong = SamplePool(1, [0, 1], [False, False], [1, 1], {"orm": [0.1, 0.9]})
    assert scorer_auc([all_wrong], "orm") is None
    assert scorer_auc([POOL, all_wrong], "orm") == pytest.approx(3 / 8)  # pairs never cross problems


def test_auc_interval_is_wide_on_few_problems_and_narrows_with_more():
    import random

    from rlvr.eval.curves import auc_interval

    rng = random.Random(0)

    def problem():  # a scorer slightly better than chance: correct samples score a bit higher
        correct = [rng.random() < 0.5 for _ in range(8)]
        return [rng.random() + 0.2 * c for c in correct], correct

    few, many = [problem() for _ in range(8)], [problem() for _ in range(400)]
    lo_few, hi_few = auc_interval(few)
    lo_many, hi_many = auc_interval(many)
    assert lo_few <= within_problem_auc(few) <= hi_few
    assert lo_many <= within_problem_auc(many) <= hi_many
    assert hi_many - lo_many < (hi_few - lo_few) / 3  # 50x the problems: about 1/7 the width
    assert lo_many > 0.5  # the real edge is resolved with enough problems
    assert auc_interval([([0.1, 0.2], [True, True])]) is None  # no pair, no interval


def test_score_spread_tells_a_difficulty_detector_from_a_ranker():
    from rlvr.eval.curves import score_spread

    # scores that depend only on the problem: no spread within, all of it between
    difficulty = [([0.9] * 4, [True, True, False, True]), ([0.1] * 4, [False, False, True, False])]
    assert score_spread(difficulty) == {"within": 0.0, "between": pytest.approx(0.4)}
    ranker = [([0.9, 0.9, 0.1, 0.9], [True, True, False, True]), ([0.1, 0.1, 0.9, 0.1], [False, False, True, False])]
    spread = score_spread(ranker)
    assert spread["within"] == pytest.approx(math.sqrt(3) * 0.2) and spread["between"] == pytest.approx(0.2)
    assert score_spread([]) == {"within": 0.0, "between": 0.0}


def test_vote_scorer_agreement_says_where_a_scorer_adds_to_the_vote():
    def pool(groups, correct, conf):
        return SamplePool(difficulty=1, group_ids=groups, correct=correct, tokens=[1] * len(groups),
                          scores={"confidence": conf})

    pools = [
        pool([0, 0, 1], [True, True, False], [0.9, 0.5, 0.1]),  # both right
        pool([0, 0, 1], [True, True, False], [0.1, 0.2, 0.9]),  # a confident wrong sample over a right majority
        pool([0, 0, 1], [False, False, True], [0.1, 0.2, 0.9]),  # the scorer finds the rare right answer
        pool([0, 0, 1], [False, False, True], [0.9, 0.2, 0.1]),  # confidently wrong with the majority
    ]
    shares = vote_scorer_agreement(pools, "confidence", 3)
    assert shares == {"both": 0.25, "vote_only": 0.25, "scorer_only": 0.25, "neither": 0.25}
    tied = vote_scorer_agreement([pool([0, 1], [True, False], [0.5, 0.5])], "confidence", 2)
    assert tied == pytest.approx({"both": 0.25, "vote_only": 0.25, "scorer_only": 0.25, "neither": 0.25})
    only_first = vote_scorer_agreement([pool([0, 1, 1], [True, False, False], [0.9, 0.1, 0.1])], "confidence", 1)
    assert only_first == {"both": 1.0, "vote_only": 0.0, "scorer_only": 0.0, "neither": 0.0}
    with pytest.raises(ValueError, match="fewer than n=4"):
        vote_scorer_agreement(pools, "confidence", 4)
