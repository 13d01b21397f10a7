"""Training stages: GRPO on accelerate (`run_grpo`, `GRPOConfig`); SFT in `rlvr.trainer.sft`."""
from rlvr.trainer.config import GRPOConfig
from rlvr.trainer.grpo import NonFiniteError, run_grpo

__all__ = ["GRPOConfig", "NonFiniteError", "run_grpo"]
