"""Each search method on the toy policy with the real math verifier.

The toy writes the lone answer "7" in about 5% of samples, so a method that spends enough
compute finds the known answer, and one sample usually does not.
"""
import pytest
import torch

from rlvr.search import (
    AdaptiveConfig,
    BeamSearchConfig,
    BestOfNConfig,
    DVTSConfig,
    MCTSConfig,
    MajorityVoteConfig,
    SearchError,
    ThinkingConfig,
    WeightedVoteConfig,
    available_methods,
    run_search,
)
from rlvr.registry import UnknownNameError
from rlvr.search.base import register_search
from toy_setup import toy_context, toy_policy, toy_problem

PROBLEM = toy_problem(3, 4)


def test_registry_lists_every_method_and_rejects_unknown_and_duplicate_names():
    assert {"best_of_n", "majority_vote", "weighted_vote", "beam_search", "dvts", "mcts", "adaptive",
            "thinking"} <= set(available_methods())
    with pytest.raises(UnknownNameError, match="unknown search method 'beem'.*beam_search"):
        run_search("beem", PROBLEM, None)
    with pytest.raises(ValueError, match="already registered"):
        register_search("best_of_n", BestOfNConfig, "again")(lambda *a: None)


def test_best_of_n_with_verifier_finds_the_answer_only_with_budget(ctx):
    big = run_search("best_of_n", PROBLEM, ctx, BestOfNConfig(num_generations=128, scorer="verifier"))
    assert big.answer == "7"
    # One sample rarely hits: over 8 tries at N=1, at most 2 are right.
    hits = sum(run_search("best_of_n", PROBLEM, ctx, BestOfNConfig(num_generations=1, scorer="verifier")).answer == "7"
               for _ in range(8))
    assert hits <= 2


def test_best_of_n_token_accounting_adds_up(ctx):
    start = ctx.generated_tokens
    result = run_search("best_of_n", PROBLEM, ctx, BestOfNConfig(num_generations=16, scorer="verifier"))
    assert len(result.details["sample_tokens"]) == 16
    assert result.tokens_spent == sum(result.details["sample_tokens"]) == ctx.generated_tokens - start
    assert result.details["scored_tokens"] == 0  # a verifier reads no tokens
    assert result.details["scores"][result.details["chosen"]] == max(result.details["scores"])


def test_majority_vote_returns_the_most_common_answer(ctx):
    result = run_search("majority_vote", PROBLEM, ctx, MajorityVoteConfig(num_generations=32))
    answers = [a for a in result.details["answers"] if a is not None]
    top = max(set(answers), key=answers.count)
    assert answers.count(result.answer) == answers.count(top)
    assert result.details["share"] == pytest.approx(answers.count(result.answer) / len(answers))
    assert result.tokens_spent == sum(result.details["sample_tokens"])


def test_weighted_vote_with_verifier_weights_picks_the_verified_answer(ctx):
    result = run_search("weighted_vote", PROBLEM, ctx, WeightedVoteConfig(num_generations=128, scorer="verifier"))
    assert result.answer == "7"
    assert result.details["share"] == 1.0  # only correct samples carry weight


@pytest.mark.parametrize(
    "method, cfg",
    [
        ("beam_search", BeamSearchConfig(beam_width=8, expansions=8, max_steps=3, scorer="verifier")),
        ("dvts", DVTSConfig(subtrees=8, expansions=8, max_steps=3, scorer="verifier")),
        ("mcts", MCTSConfig(simulations=24, expansions=8, max_depth=3, scorer="verifier")),
        ("mcts", MCTSConfig(simulations=24, expansions=8, max_depth=3, value="rollout")),
    ],
)
def test_tree_search_reaches_the_known_answer_with_budget(ctx, method, cfg):
    result = run_search(method, PROBLEM, ctx, cfg)
    assert result.answer == "7", result.text
    assert result.tokens_spent > 0


def test_beam_search_keeps_only_scored_text_and_counts_tokens(toy):
    # Spy scorer: records every text it is asked about; the answer must be one of them.
    seen = []

    aggregations = set()

    class Spy:
        name = "spy"

        def score(self, problem, texts, aggregation="last"):
            seen.extend(texts)
            aggregations.add(aggregation)
            return [float(len(t)) for t in texts]  # prefer longer paths

        def num_tokens(self, problem, texts):
            return sum(len(t) for t in texts)

    torch.manual_seed(1)
    ctx = toy_context(*toy, scorers={"spy": Spy()})
    result = run_search("beam_search", PROBLEM, ctx, BeamSearchConfig(beam_width=2, expansions=3, max_steps=4,
                                                                      scorer="spy", aggregation="min"))
    assert aggregations == {"min"}  # the configured aggregation reaches the scorer
    assert result.text in seen  # no unscored lookahead: the returned text is exactly a scored one
    assert result.details["scored_tokens"] == sum(len(t) for t in seen)
    assert result.tokens_spent == ctx.generated_tokens


def test_search_respects_the_solution_token_cap(toy):
    torch.manual_seed(2)
    ctx = toy_context(*toy, max_new_tokens=3, max_step_tokens=2)
    for method, cfg in [("beam_search", BeamSearchConfig(beam_width=2, expansions=2, max_steps=10, scorer="verifier")),
                        ("dvts", DVTSConfig(subtrees=2, expansions=2, max_steps=10, scorer="verifier"))]:
        result = run_search(method, PROBLEM, ctx, cfg)
        assert len(toy[1](result.text, add_special_tokens=False)["input_ids"]) <= 3


def test_mcts_token_budget_stops_the_search():
    torch.manual_seed(3)
    ctx = toy_context(*toy_policy(eos_bias=-1e4), max_new_tokens=200, max_step_tokens=4)  # never ends early
    result = run_search("mcts", PROBLEM, ctx, MCTSConfig(simulations=1000, max_tokens=20, expansions=2,
                                                         max_depth=50, scorer="verifier"))
    assert result.details["simulations"] < 1000 and not result.details["exhausted"]
    # it stops at the first simulation that reaches max_tokens: past it by at most one expansion
    assert 20 <= result.tokens_spent <= 20 + 2 * 4


def test_mcts_stops_when_the_tree_is_exhausted(toy):
    torch.manual_seed(4)
    ctx = toy_context(*toy, max_new_tokens=2, max_step_tokens=2)
    result = run_search("mcts", PROBLEM, ctx, MCTSConfig(simulations=1000, expansions=2, scorer="verifier"))
    assert result.details["exhausted"] and result.details["simulations"] < 1000


def test_adaptive_stops_at_the_cheapest_level_that_passes_its_check(ctx):
    cfg = AdaptiveConfig(check="verifier", token_budget=2000,
                         beam=BeamSearchConfig(beam_width=1, expansions=2, max_steps=2, scorer="verifier"),
                         best_of_n=BestOfNConfig(num_generations=128, scorer="verifier"))
    levels = [run_search("adaptive", PROBLEM, ctx, cfg) for _ in range(4)]
    for r in levels:
        assert r.details["level"] in ("single", "beam_search", "best_of_n")
        assert r.tokens_spent == sum(r.details["tokens_per_level"].values())
        if r.details["accepted"]:
            assert r.answer == "7"
    assert any(r.details["level"] != "single" for r in levels)  # a 5% single sample must escalate
    assert all(r.answer == "7" for r in levels if r.details["level"] == "best_of_n")


def test_adaptive_stays_within_a_small_budget(ctx):
    cfg = AdaptiveConfig(check="verifier", token_budget=1,
                         beam=BeamSearchConfig(scorer="verifier"), best_of_n=BestOfNConfig(scorer="verifier"))
    result = run_search("adaptive", PROBLEM, ctx, cfg)
    assert list(result.details["tokens_per_level"]) == ["single"] and result.tokens_spent <= 1


@pytest.mark.parametrize("budget", [3, 10, 40, 100, 400])
def test_adaptive_never_generates_more_than_its_budget(budget):
    torch.manual_seed(budget)
    # a policy that never ends early: every sample and step runs to its cap, the worst case
    ctx = toy_context(*toy_policy(eos_bias=-1e4), max_new_tokens=12, max_step_tokens=4)
    cfg = AdaptiveConfig(check="verifier", token_budget=budget,
                         beam=BeamSearchConfig(beam_width=2, expansions=2, max_steps=3, scorer="verifier"),
                         best_of_n=BestOfNConfig(num_generations=64, scorer="verifier"))
    for _ in range(3):
        result = run_search("adaptive", PROBLEM, ctx, cfg)
        assert result.tokens_spent == sum(result.details["tokens_per_level"].values()) <= budget


def test_thinking_budget_caps_thinking_and_forces_the_answer():
    # This toy never writes </think> nor EOS: the cap closes the tag and the answer follows.
    torch.manual_seed(0)
    ctx = toy_context(*toy_policy(eos_bias=-1e4), max_new_tokens=50)
    result = run_search("thinking", PROBLEM, ctx, ThinkingConfig(budget=5, answer_tokens=2))
    assert result.details["thinking_tokens"] == 5 and result.details["forced_close"]
    thinking, answer = result.text.split("</think>")
    assert thinking.startswith("<think>") and len(thinking) == len("<think>") + 5
    assert len(answer) == 2  # the answer gets exactly its own budget
    assert result.tokens_spent == ctx.generated_tokens == 7


@pytest.mark.parametrize(
    "method, cfg, match",
    [
        ("best_of_n", BestOfNConfig(num_generations=0), "best_of_n.num_generations must be >= 1"),
        ("majority_vote", MajorityVoteConfig(num_generations=0), "majority_vote.num_generations must be >= 1"),
        ("beam_search", BeamSearchConfig(beam_width=0), "beam_search.beam_width must be >= 1"),
        ("dvts", DVTSConfig(expansions=0), "dvts.expansions must be >= 1"),
        ("mcts", MCTSConfig(simulations=0), "mcts.simulations must be >= 1"),
        ("adaptive", AdaptiveConfig(token_budget=0), "adaptive.token_budget must be >= 1"),
        ("thinking", ThinkingConfig(budget=0), "thinking.budget must be >= 1"),
        ("best_of_n", BestOfNConfig(num_generations=2, scorer="prm"), "scorer 'prm' is not loaded; loaded: verifier"),
    ],
)
def test_bad_arguments_give_clear_errors(ctx, method, cfg, match):
    with pytest.raises(SearchError, match=match):
        run_search(method, PROBLEM, ctx, cfg)


def test_wrong_config_type_is_refused(ctx):
    with pytest.raises(SearchError, match="best_of_n takes a BestOfNConfig, got BeamSearchConfig"):
        run_search("best_of_n", PROBLEM, ctx, BeamSearchConfig())


class Constant:
    """A scorer that is always this sure."""

    name = "constant"

    def __init__(self, value):
        self.value = value

    def score(self, problem, texts, aggregation="last"):
        return [self.value] * len(texts)

    def num_tokens(self, problem, texts):
        return 0


@pytest.mark.parametrize("confidence, level", [(0.9, "single"), (0.1, "best_of_n")])
def test_adaptive_confidence_check_decides_escalation(toy, confidence, level):
    torch.manual_seed(0)
    ctx = toy_context(*toy, scorers={"constant": Constant(confidence)})
    cfg = AdaptiveConfig(check="confidence", confidence_scorer="constant", threshold=0.5, token_budget=500,
                         beam=BeamSearchConfig(beam_width=1, expansions=2, max_steps=2, scorer="constant"),
                         best_of_n=BestOfNConfig(num_generations=4, scorer="constant"))
    result = run_search("adaptive", PROBLEM, ctx, cfg)
    assert result.details["level"] == level
    assert result.details["accepted"] == (confidence >= 0.5)


def test_thinking_extends_when_thinking_ends_too_early():
    # This toy closes </think> at once; budget forcing replaces the tag with "Wait," to go on.
    model, tok = toy_policy(allowed=["1", "3", "5", "7", "</think>"], eos_bias=-1e4, boost={"</think>": 3.0})
    torch.manual_seed(0)
    ctx = toy_context(model, tok, max_new_tokens=20)
    plain = run_search("thinking", PROBLEM, ctx, ThinkingConfig(budget=16, answer_tokens=2))
    assert plain.details["extensions"] == 0 and not plain.details["forced_close"]
    extended = run_search("thinking", PROBLEM, ctx, ThinkingConfig(budget=16, min_thinking=4, max_extensions=2,
                                                                   answer_tokens=2))
    assert extended.details["extensions"] >= 1
    assert extended.text.count("Wait,") == extended.details["extensions"]
    assert extended.details["thinking_tokens"] > plain.details["thinking_tokens"]


def test_mcts_puct_and_backprop():
    from rlvr.search.mcts import MCTSConfig as Cfg, Node, backprop, priors, puct
    from rlvr.search.steps import Path

    cfg = Cfg(c_init=1.0, c_base=1e9)  # c(s) = c_init while N << c_base
    root = Node(Path())
    a, b = Node(Path(["a"]), 0.5, root), Node(Path(["b"]), 0.5, root)
    root.children = [a, b]
    backprop(a, 1.0)
    backprop(b, 0.0)
    backprop(b, 0.5)
    assert (root.visits, root.value_sum) == (3, 1.5)
    assert puct(root, a, cfg) == pytest.approx(1.0 + 0.5 * 3 ** 0.5 / 2)
    assert puct(root, b, cfg) == pytest.approx(0.25 + 0.5 * 3 ** 0.5 / 3)
    assert priors([None, -1.0]) == [0.5, 0.5]
    assert priors([0.0, 0.0, -1e9]) == pytest.approx([0.5, 0.5, 0.0])


def test_sampled_steps_carry_log_probs_for_mcts_priors(ctx):
    # the hf engine reports each token's sampling log-prob, so MCTS priors follow the policy
    from rlvr.search.mcts import priors

    steps = ctx.sample_steps([toy_problem().prompt], 4)[0]
    nonempty = [c.mean_logprob for c in steps if c.num_tokens]
    assert nonempty and all(m is not None and m <= 0 for m in nonempty)
    assert sum(priors(nonempty)) == pytest.approx(1.0)


def test_calibrate_threshold_separates_training_scores():
    from rlvr.search.adaptive import calibrate_threshold

    assert calibrate_threshold([0.1, 0.2, 0.6, 0.7], [False, False, True, True]) == 0.6
    # Nothing is correct: the best rule accepts nothing.
    assert calibrate_threshold([0.3, 0.4], [False, False]) == float("inf")
    with pytest.raises(SearchError, match="one correctness flag per score"):
        calibrate_threshold([0.5], [])
