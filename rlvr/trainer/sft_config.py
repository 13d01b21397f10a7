"""SFTStageConfig: the options of an `sft` stage, importable without torch (a recipe is parsed
before any model is loaded)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SFTStageConfig:
    """Options of an `sft` stage (the TRL `SFTConfig` knobs a recipe may set)."""

    steps: int = 200
    """Optimizer steps (TRL `max_steps`); the dataset is repeated as often as needed."""
    batch_size: int = 16
    """Prompt/completion pairs per device per micro-batch."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step."""
    learning_rate: float = 1e-3
    """Peak learning rate (AdamW)."""
    lr_scheduler: str = "cosine"
    """transformers scheduler name: constant, linear, cosine, ..."""
    warmup_ratio: float = 0.05
    """Fraction of `steps` spent warming the learning rate up from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_length: int = 512
    """Tokens per prompt+completion; longer pairs are truncated."""
    num_examples: int = 2000
    """With `dataset_from: generator`: how many worked solutions to draw from the task."""
    save_steps: int = 100
    """Checkpoint every this many steps (what `--resume auto` continues from)."""
    logging_steps: int = 10
    """Log loss and token accuracy every this many steps."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "gradient_accumulation_steps", "max_length",
                     "num_examples", "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        check_scheduler_name(self.lr_scheduler)


def check_scheduler_name(name: str) -> None:
    """A transformers scheduler name, else a ValueError naming the field and the valid names."""
    from transformers.trainer_utils import SchedulerType

    valid = [s.value for s in SchedulerType]
    if name not in valid:
        raise ValueError(f"lr_scheduler: unknown learning-rate schedule {name!r}; valid: {', '.join(sorted(valid))}")
