"""Outcome and process reward models (ORM, PRM), trained on verifier-made labels."""
from rlvr.reward_models.labels import LabeledSolution, orm_labels, prm_labels
from rlvr.reward_models.model import (
    AGGREGATIONS,
    RewardModel,
    RewardModelConfig,
    RewardModelError,
    aggregate,
    load_reward_model,
)
from rlvr.reward_models.steps import DEFAULT_SEPARATOR, encode_steps, join_steps, split_steps
from rlvr.reward_models.train import RewardTrainConfig, evaluate_loss, train_reward_model

__all__ = [
    "AGGREGATIONS", "DEFAULT_SEPARATOR", "LabeledSolution", "RewardModel", "RewardModelConfig",
    "RewardModelError", "RewardTrainConfig", "aggregate", "encode_steps", "evaluate_loss", "join_steps",
    "load_reward_model", "orm_labels", "prm_labels", "split_steps", "train_reward_model",
]
