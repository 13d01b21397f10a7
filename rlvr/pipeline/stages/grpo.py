"""`grpo` stage: `rlvr.trainer.grpo.run_grpo` on the recipe's task, from the previous model."""
from __future__ import annotations

from rlvr.pipeline.stages.registry import register_stage


def grpo_options():
    from rlvr.trainer.config import GRPOConfig

    return GRPOConfig


@register_stage("grpo", grpo_options, trains=True)
def run_grpo_stage(ctx, cfg) -> dict:
    from rlvr.trainer.grpo import run_grpo

    policy = ctx.load_policy()
    task = ctx.make_task()
    return run_grpo(policy, task, cfg, ctx.stage_dir, resume="auto" if ctx.resume else None)
