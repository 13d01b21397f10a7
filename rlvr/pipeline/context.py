"""What a stage runner gets: its recipe, its folder, where its model and dataset come from."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_DIR = "model"
"""A training stage saves its model to `<stage dir>/model`."""
DATASET_DIR = "dataset"
"""A rejection_sampling stage saves its `datasets.Dataset` to `<stage dir>/dataset`."""


@dataclass
class StageContext:
    recipe: Any
    """The validated `Recipe`."""
    stage: Any
    """This stage's `StageSpec`."""
    index: int
    """Position in the recipe (0-based); the folder is `<index>-<name>`."""
    stage_dir: Path
    """This stage's folder (created by the runner)."""
    model_dir: Path | None
    """The saved model this stage starts from; None means the recipe's base model."""
    dataset_dir: Path | None
    """The rejection-sampling dataset this stage reads, when it reads one."""
    resume: bool
    """True when the stage was interrupted before and should continue from its checkpoint."""
    device: Any = None
    """This process's device (accelerate's `PartialState().device`); None lets load_policy pick."""
    is_main: bool = True
    """True on the process that writes files (the only one without accelerate launch)."""

    @property
    def seed(self) -> int:
        return self.recipe.seed

    def model_config(self):
        """The ModelConfig to load: the base one, or the same with the previous stage's folder."""
        cfg = self.recipe.model
        if self.model_dir is None:
            return cfg
        return dataclasses.replace(cfg, **_from_saved_model_fields(cfg, self.model_dir))

    def load_policy(self, train: bool = True):
        """The stage's starting policy; `train=False` (stages that only generate) loads the weights
        in the dtype generation computes in rather than as training masters."""
        from rlvr.models import load_policy

        return load_policy(self.model_config(), device=self.device, train=train)

    def make_task(self, difficulty: int | list[int] | None = None, for_eval: bool = False):
        """The recipe's task at `difficulty` (default: the recipe's level).

        Training stages draw from their own stream (seed + 1 + stage index) so consecutive stages
        see fresh problems; evals use the recipe seed so every eval scores the same held-out list.
        """
        from rlvr.tasks import make_task

        spec = self.recipe.task
        level = spec.difficulty if difficulty is None else difficulty
        seed = self.recipe.seed if for_eval else self.recipe.seed + 1 + self.index
        return make_task(spec.name, seed=seed, difficulty=level, **spec.options)

    def write_metrics(self, rows: list[dict]) -> None:
        """(Re)write this stage's metrics.jsonl with `rows` (main process only).

        Whole-file writes make a re-run of an interrupted stage replace, not duplicate, its rows.
        """
        if not self.is_main:
            return
        path = self.stage_dir / "metrics.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
        os.replace(tmp, path)


def _from_saved_model_fields(cfg, model_dir: Path) -> dict:
    """Fields that make `cfg` load the saved folder instead of the original base model.

    A saved stage model is a plain transformers folder (LoRA merged by `save_policy`), so the
    adapter settings of the base config must not be applied a second time on top of it unless the
    next stage trains LoRA again (that is the stage's own choice, kept from the config).
    """
    names = {f.name for f in dataclasses.fields(cfg)}
    fields: dict = {"name_or_path": str(model_dir)}
    for gguf_key in ("gguf_file",):  # a saved folder is safetensors, never GGUF
        if gguf_key in names:
            fields[gguf_key] = None
    return fields
