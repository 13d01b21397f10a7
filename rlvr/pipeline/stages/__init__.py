"""Stage types of a recipe; importing this package registers every one."""
from rlvr.pipeline.stages.registry import STAGE_KINDS, StageKind, register_stage, stage_kind
from rlvr.pipeline.stages import eval, grpo, rejection_sampling, self_improve, sft  # noqa: F401  (registers)

__all__ = ["STAGE_KINDS", "StageKind", "register_stage", "stage_kind"]
