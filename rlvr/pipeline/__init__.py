"""Recipes: chained stages (cold-start SFT -> GRPO -> rejection sampling -> SFT -> GRPO -> eval)
and the self-improvement loop. `rlvr run RECIPE.yaml` is `run_recipe(load_recipe(path), out)`."""
from rlvr.pipeline.recipe import Recipe, StageSpec, TaskSpec, load_recipe, parse_recipe
from rlvr.pipeline.runner import run_recipe
from rlvr.pipeline.stages import STAGE_KINDS, register_stage, stage_kind

__all__ = ["Recipe", "StageSpec", "TaskSpec", "load_recipe", "parse_recipe", "run_recipe",
           "STAGE_KINDS", "register_stage", "stage_kind"]
