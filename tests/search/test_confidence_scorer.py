"""The `confidence` scorer: each sample's own mean token probability, as the engine reported it
while sampling; no model is trained or called. A policy surer of the right answer ranks it first,
in sample pools and in best-of-N and weighted vote."""
import math

import pytest
import torch

from rlvr.eval.curves import CONFIDENCE, build_pools, confidence_scores, pool_curves, scorer_auc
from rlvr.search import AdaptiveConfig, BestOfNConfig, WeightedVoteConfig, run_search
from rlvr.search.context import Completion

from toy_setup import toy_context, toy_policy, toy_problem


def test_confidence_is_the_mean_token_probability_and_needs_log_probs():
    samples = [Completion("7", 1, "eos", math.log(0.5)), Completion("", 0, "eos", None),
               Completion("13", 2, "eos", (math.log(0.9) + math.log(0.1)) / 2)]
    assert confidence_scores(samples) == pytest.approx([0.5, 0.0, 0.3])
    with pytest.raises(ValueError, match="needs the engine's log-probs"):
        confidence_scores([Completion("7", 1, "eos", None)])


def test_a_policy_surer_of_the_right_answer_ranks_it_first():
    torch.manual_seed(0)
    model, tokenizer = toy_policy(boost={"7": 2.0})  # "7" (= 3 + 4) is the likeliest digit
    ctx = toy_context(model, tokenizer, max_new_tokens=1)  # one digit: its probability is its score
    problems = [toy_problem(3, 4), toy_problem(1, 6), toy_problem(2, 5)]  # every answer is 7
    pools = build_pools(ctx, problems, 16, [CONFIDENCE], chunk=3)
    assert all(0.0 < s <= 1.0 for pool in pools for s in pool.scores[CONFIDENCE])
    assert any(c for pool in pools for c in pool.correct)
    assert scorer_auc(pools, CONFIDENCE) == 1.0  # every "7" outscores every other digit
    methods = {p.method for p in pool_curves(pools, [1, 4])}
    assert {"best_of_n[confidence]", "weighted_vote[confidence]"} <= methods


@pytest.mark.parametrize("method,cfg", [("best_of_n", BestOfNConfig(num_generations=8, scorer=CONFIDENCE)),
                                        ("weighted_vote", WeightedVoteConfig(num_generations=8, scorer=CONFIDENCE))])
def test_best_of_n_and_weighted_vote_rank_by_confidence_without_a_reward_model(method, cfg):
    torch.manual_seed(0)
    model, tokenizer = toy_policy(boost={"7": 2.0})
    ctx = toy_context(model, tokenizer, max_new_tokens=1)
    result = run_search(method, toy_problem(3, 4), ctx, cfg)
    assert result.answer == "7" and ctx.scored_tokens == 0  # no model read a token
    assert result.tokens_spent == ctx.generated_tokens


@pytest.mark.parametrize("threshold,level", [(0.0, "single"), (1.0, "best_of_n")])
def test_adaptive_trusts_an_answer_by_the_policys_own_confidence(threshold, level):
    """`confidence_scorer: confidence`: the single sample is accepted when its mean token probability
    reaches the threshold; otherwise the search goes straight to best-of-N (a beam-search answer has
    no sample of its own to be confident in), and no model reads a token."""
    torch.manual_seed(0)
    model, tokenizer = toy_policy(boost={"7": 2.0})
    ctx = toy_context(model, tokenizer, max_new_tokens=1)
    cfg = AdaptiveConfig(check="confidence", confidence_scorer=CONFIDENCE, threshold=threshold, token_budget=64,
                         best_of_n=BestOfNConfig(num_generations=8, scorer=CONFIDENCE))
    result = run_search("adaptive", toy_problem(3, 4), ctx, cfg)
    details = result.details
    assert details["level"] == level and details["accepted"] == (level == "single")
    assert "beam_search" not in details["tokens_per_level"] and ctx.scored_tokens == 0
    assert 0.0 < details["confidence"] < 1.0 and result.tokens_spent == ctx.generated_tokens
    if level == "best_of_n":  # the confidence of the sample best-of-N chose, the highest of its 8
        assert result.answer == "7" and details["tokens_per_level"] == {"single": 1, "best_of_n": 8}
