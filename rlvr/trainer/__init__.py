"""Training stages: GRPO on accelerate (`run_grpo`, `GRPOConfig`); SFT in `rlvr.trainer.sft`.

The configs import without torch; `run_grpo` and `NonFiniteError` load the trainer on first use.
"""
from rlvr.trainer.config import GRPOConfig

__all__ = ["GRPOConfig", "NonFiniteError", "run_grpo"]


def __getattr__(name: str):
    if name in ("NonFiniteError", "run_grpo"):
        from rlvr.trainer import grpo

        return getattr(grpo, name)
    raise AttributeError(f"module 'rlvr.trainer' has no attribute {name!r}")
