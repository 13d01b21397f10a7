"""Test-time search: best-of-N, votes, beam search, DVTS, MCTS, adaptive compute, thinking budget.

    ctx = SearchContext(make_engine("hf", model, tokenizer), tokenizer, scorers={"prm": RewardModelScorer(prm)})
    result = run_search("beam_search", Problem(prompt, example), ctx, BeamSearchConfig(beam_width=2))
"""
from rlvr.search.adaptive import AdaptiveConfig
from rlvr.search.base import (
    Problem,
    SearchError,
    SearchResult,
    available_methods,
    get_method,
    make_config,
    register_search,
    run_search,
)
from rlvr.search.beam import BeamSearchConfig
from rlvr.search.best_of_n import BestOfNConfig
from rlvr.search.context import GenerationConfig, SearchContext
from rlvr.search.dvts import DVTSConfig
from rlvr.search.judge import JudgeScorer
from rlvr.search.mcts import MCTSConfig
from rlvr.search.scorers import RewardModelScorer, VerifierScorer
from rlvr.search.thinking import ThinkingConfig
from rlvr.search.vote import MajorityVoteConfig, WeightedVoteConfig

__all__ = [
    "AdaptiveConfig", "BeamSearchConfig", "BestOfNConfig", "DVTSConfig", "GenerationConfig", "JudgeScorer",
    "MCTSConfig", "MajorityVoteConfig", "Problem", "RewardModelScorer", "SearchContext", "SearchError",
    "SearchResult", "ThinkingConfig", "VerifierScorer", "WeightedVoteConfig", "available_methods",
    "get_method", "make_config", "register_search", "run_search",
]
