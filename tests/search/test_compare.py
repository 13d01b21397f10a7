"""Comparing methods across budgets N: the budget rules and the measured points."""
import pytest
import torch

from rlvr.search import AdaptiveConfig, BeamSearchConfig, BestOfNConfig, DVTSConfig, MCTSConfig, ThinkingConfig
from rlvr.search.compare import compare_methods, config_at_budget
from toy_setup import toy_context, toy_problem


@pytest.mark.parametrize(
    "name, base, n, expected",
    [
        ("best_of_n", BestOfNConfig(num_generations=3), 8, {"num_generations": 8}),
        ("beam_search", BeamSearchConfig(beam_width=1, expansions=4), 8, {"beam_width": 2, "expansions": 4}),
        ("beam_search", BeamSearchConfig(expansions=4), 2, {"beam_width": 1, "expansions": 2}),
        ("dvts", DVTSConfig(expansions=2), 8, {"subtrees": 4, "expansions": 2}),
        ("mcts", MCTSConfig(), 5, {"simulations": 5}),
        ("thinking", ThinkingConfig(), 4, {"budget": 64}),
    ],
)
def test_budget_rules(name, base, n, expected):
    cfg = config_at_budget(name, base, n)
    assert {k: getattr(cfg, k) for k in expected} == expected


def test_adaptive_budget_sizes_both_levels():
    cfg = config_at_budget("adaptive", AdaptiveConfig(), 8)
    assert cfg.best_of_n.num_generations == 8 and cfg.beam.beam_width * cfg.beam.expansions == 8


def test_compare_methods_measures_every_method_and_budget(toy):
    torch.manual_seed(0)
    ctx = toy_context(*toy)
    problems = [toy_problem(3, 4), toy_problem(1, 4)]
    methods = {"maj": ("majority_vote", None), "bon": ("best_of_n", BestOfNConfig(scorer="verifier"))}
    points, outcomes = compare_methods(problems, ctx, methods, [1, 64], show_progress=False)
    assert len(outcomes) == 2 * 2 * 2
    assert sum(o.tokens for o in outcomes) == ctx.generated_tokens  # every generated token is attributed
    overall = {(p.method, p.n): p for p in points if p.difficulty is None}
    assert overall[("bon", 64)].accuracy == 1.0  # with the answer key and 64 samples, both are found
    bon1 = [o for o in outcomes if o.method == "bon" and o.n == 1]
    assert overall[("bon", 1)].accuracy == sum(o.correct for o in bon1) / 2
    assert overall[("maj", 64)].tokens == pytest.approx(sum(o.tokens for o in outcomes if o.method == "maj" and o.n == 64) / 2)
