"""Evaluation: pass@k, maj@k, votes, accuracy-vs-compute curves, tables and plots."""
from rlvr.eval.metrics import (
    VoteResult,
    group_answers,
    maj_at_k,
    majority_vote,
    pass_at_k,
    vote_accuracy,
)

__all__ = ["VoteResult", "group_answers", "maj_at_k", "majority_vote", "pass_at_k", "vote_accuracy"]
