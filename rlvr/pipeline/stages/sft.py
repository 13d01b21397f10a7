"""`sft` stage: supervised fine-tuning on worked solutions or a rejection-sampling dataset."""
from __future__ import annotations

from rlvr.pipeline.stages.registry import register_stage


def sft_options():
    from rlvr.trainer.sft_config import SFTStageConfig

    return SFTStageConfig


def training_pairs(ctx, cfg, tokenizer) -> list[dict]:
    """Prompt/completion pairs: the task's worked solutions, or the kept rejection samples."""
    from rlvr.pipeline.stages.registry import GENERATOR
    from rlvr.trainer.sft import worked_solution_pairs

    if ctx.stage.dataset_from == GENERATOR:
        examples = ctx.make_task().sample(cfg.num_examples)
        return worked_solution_pairs(examples, tokenizer, ctx.recipe.prompt_format)
    from datasets import load_from_disk

    if not ctx.dataset_dir.is_dir():
        from rlvr.errors import StageError

        raise StageError(f"stage {ctx.stage.name!r}: no dataset at {ctx.dataset_dir} (rejection sampling "
                         f"kept no correct completion); re-run stage {ctx.stage.dataset_from!r} with settings "
                         "that keep some (--resume auto --rerun-changed --set ...)")
    data = load_from_disk(str(ctx.dataset_dir))
    return [{"prompt": r["prompt"], "completion": r["completion"]} for r in data]


@register_stage("sft", sft_options, trains=True, reads_dataset=True)
def run_sft_stage(ctx, cfg) -> dict:
    from rlvr.trainer.sft import run_sft

    policy = ctx.load_policy()
    pairs = training_pairs(ctx, cfg, policy.tokenizer)
    return run_sft(policy, pairs, cfg, ctx.stage_dir, resume=ctx.resume, seed=ctx.seed)
