"""RLVR algorithms: group advantages, clipped policy losses, KL estimators. Imports only torch."""
from .advantages import ADVANTAGES, compute_advantages, group_advantages, register_advantage
from .kl import KL_ESTIMATORS, kl_penalty
from .losses import (
    POLICY_LOSSES,
    LossNormalizer,
    PolicyLossConfig,
    PolicyLossInput,
    compute_policy_loss,
    loss_config,
    register_policy_loss,
)
from rlvr.registry import Registry

__all__ = [
    "ADVANTAGES", "KL_ESTIMATORS", "POLICY_LOSSES", "LossNormalizer", "PolicyLossConfig",
    "PolicyLossInput", "Registry", "compute_advantages", "compute_policy_loss", "group_advantages", "kl_penalty",
    "loss_config", "register_advantage", "register_policy_loss",
]
