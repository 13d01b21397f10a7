"""`rejection_sampling` stage: num_generations samples per problem, keep the verified correct ones.

Kept completions are deduplicated per problem, optionally shortest first, at most M per problem,
and saved as a `datasets.Dataset` (prompt/completion columns, TRL's prompt-completion format) in
`<stage dir>/dataset` for a later `sft` stage (`dataset_from: <this stage's name>`). When nothing
was kept there is no `dataset/` (and an `sft` stage reading it stops with a clear error).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import ClassVar

from rlvr.pipeline.stages.registry import register_stage
from rlvr.rollout.engine_config import EngineConfig, as_engine_config
from rlvr.rollout.sampling import SAMPLING_SHORTHAND, SamplingConfig


@dataclass
class RejectionSamplingConfig:
    """Options of a `rejection_sampling` stage."""

    shorthand: ClassVar[dict[str, str]] = SAMPLING_SHORTHAND
    """`max_new_tokens: 64` is `sampling: {max_new_tokens: 64}`."""
    renamed: ClassVar[dict[str, str]] = {
        "samples_per_problem": "renamed to num_generations (samples per problem, as grpo and TRL name it)"}

    num_problems: int = 256
    """Training problems to sample for (drawn from the task's training stream)."""
    num_generations: int = 8
    """Completions sampled per problem."""
    max_per_problem: int = 2
    """M: at most this many distinct correct completions kept per problem."""
    shortest_first: bool = True
    """Keep the shortest correct completions (else the first sampled)."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How the samples are drawn (temperature > 0); truncated completions are never kept."""
    max_prompt_length: int | None = None
    """Prompt length cap (tokens): a longer prompt keeps its last max_prompt_length tokens for
    sampling, as in the grpo stage (set per stage, never inherited); the dataset keeps the full
    prompt text. None = the model's context minus max_new_tokens."""
    batch_size: int = 16
    """Problems per generate call (each expands to num_generations rows)."""
    difficulty: int | None = None
    """Draw problems at this level instead of the recipe task's level."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    """Rollout engine and its options (`rlvr.rollout.engine_config`; `engine: fast` is shorthand for
    the name; the recipe's `engine:` fills what the stage leaves out)."""

    def __post_init__(self) -> None:
        for name in ("num_problems", "num_generations", "max_per_problem", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sampling.temperature <= 0:
            raise ValueError(f"sampling.temperature: must be > 0 (greedy samples are all the same), "
                             f"got {self.sampling.temperature}")
        from rlvr.trainer.config import check_max_prompt_length

        check_max_prompt_length(self.max_prompt_length)
        self.engine = as_engine_config(self.engine)  # a bare name from Python callers, as in YAML


def select_correct(samples, max_per_problem: int, shortest_first: bool) -> list:
    """The kept samples of one problem: correct, not truncated, distinct text, at most M."""
    seen: set[str] = set()
    candidates = []
    for s in samples:
        key = s.text.strip()
        if s.correct and not s.truncated and key not in seen:
            seen.add(key)
            candidates.append(s)
    if shortest_first:
        candidates.sort(key=lambda s: s.num_tokens)  # stable: ties keep sampling order
    return candidates[:max_per_problem]


def keep_correct(policy, examples, prompt_format, cfg: RejectionSamplingConfig, seed: int):
    """(rows for the dataset, metrics) from sampling `examples` with `policy`."""
    from rlvr.pipeline.sampling import check_prompt_cap, count_truncated_prompts, sample_and_verify
    from rlvr.rollout.base import SamplingParams

    check_prompt_cap(policy, cfg)
    params = SamplingParams.of(cfg.sampling, seed=seed)
    groups = sample_and_verify(policy, examples, prompt_format, cfg.num_generations, params,
                               cfg.batch_size, desc="rejection sampling", max_prompt_length=cfg.max_prompt_length,
                               engine=cfg.engine)
    rows = []
    solved = 0
    for ex, samples in zip(examples, groups):
        kept = select_correct(samples, cfg.max_per_problem, cfg.shortest_first)
        solved += bool(kept)
        rows += [{"prompt": s.prompt, "completion": s.text, "id": ex.id, "num_tokens": s.num_tokens}
                 for s in kept]
    total = sum(len(g) for g in groups)
    metrics = {
        "problems": len(examples),
        "problems_with_kept": solved,
        "solved_fraction": solved / len(examples),
        "kept": len(rows),
        "sample_accuracy": sum(s.correct for g in groups for s in g) / total,
        "mean_kept_tokens": sum(r["num_tokens"] for r in rows) / len(rows) if rows else 0.0,
        "prompts_truncated": count_truncated_prompts(groups, cfg.max_prompt_length, "rejection_sampling"),
    }
    return rows, metrics


def check_kept_some(ctx, rows: list, metrics: dict) -> None:
    """A stage that kept nothing fails (before it counts as done) when a later stage trains on its
    dataset, saying which settings to change; re-running it unchanged would keep nothing again."""
    readers = [s.name for s in ctx.recipe.stages if s.dataset_from == ctx.stage.name]
    if rows or not readers:
        return
    from rlvr.errors import StageError

    i = ctx.index
    raise StageError(
        f"stage {i} {ctx.stage.name}: rejection sampling kept no correct completion ({metrics['problems']} "
        f"problems, sample accuracy {metrics['sample_accuracy']:.3f}), so {readers[0]} has nothing to "
        f"train on; train the model it samples longer, or sample more (stages.{i}.num_generations, "
        f"stages.{i}.num_problems, stages.{i}.sampling.max_new_tokens), then continue with --resume auto "
        "--rerun-changed --set ...")


def rejection_sampling_options():
    return RejectionSamplingConfig


@register_stage("rejection_sampling", rejection_sampling_options, trains=False, writes_dataset=True)
def run_rejection_sampling(ctx, cfg: RejectionSamplingConfig) -> dict:
    from datasets import Dataset

    from rlvr.pipeline.context import DATASET_DIR

    policy = ctx.load_policy(train=False)
    examples = ctx.make_task(cfg.difficulty).sample(cfg.num_problems)
    rows, metrics = keep_correct(policy, examples, ctx.recipe.prompt_format, cfg, ctx.seed)
    check_kept_some(ctx, rows, metrics)
    if ctx.is_main:
        # Written beside and renamed into place: a crash never leaves a half dataset behind.
        final, tmp = ctx.stage_dir / DATASET_DIR, ctx.stage_dir / f"{DATASET_DIR}.tmp"
        for leftover in (tmp, final):  # from an interrupted earlier attempt of this stage
            shutil.rmtree(leftover, ignore_errors=True)
        if rows:  # `datasets` cannot load a saved dataset of 0 rows, so none is written then
            Dataset.from_list(rows).save_to_disk(str(tmp))
            tmp.rename(final)
    ctx.write_metrics([{"step": 0, **{f"rejection_sampling/{k}": v for k, v in metrics.items()}}])
    return metrics
