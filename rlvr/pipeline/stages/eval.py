"""`eval` stage: held-out accuracy (greedy pass@1), pass@k and maj@k, mean completion length."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from rlvr.pipeline.stages.registry import register_stage
from rlvr.rollout.engine_config import EngineConfig, as_engine_config
from rlvr.rollout.sampling import SAMPLING_SHORTHAND, SamplingConfig


@dataclass
class EvalStageConfig:
    """Options of an `eval` stage."""

    shorthand: ClassVar[dict[str, str]] = SAMPLING_SHORTHAND
    """`max_new_tokens: 64` is `sampling: {max_new_tokens: 64}`."""
    renamed: ClassVar[dict[str, str]] = {
        "k": "renamed to num_generations (samples per problem; pass@k and maj@k use k = num_generations)"}

    num_problems: int = 200
    """Held-out problems to score (the task's fixed held-out split)."""
    # not "k": it is how many samples are drawn per problem (pass@k's n), the one name for that everywhere
    num_generations: int = 4
    """Samples per problem, reported as pass@N and maj@N with N = num_generations; 0 skips sampling
    (greedy accuracy only)."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How the samples are drawn (max_new_tokens and stop also bound the greedy completion; the
    accuracy itself is always greedy)."""
    max_prompt_length: int | None = None
    """Prompt length cap (tokens): a longer prompt keeps its last max_prompt_length tokens, as in
    the grpo stage (set per stage, never inherited); None = the model's context minus
    max_new_tokens."""
    batch_size: int = 64
    """Problems per generate call (each expands to num_generations rows when sampling)."""
    difficulty: int | None = None
    """Held-out problems at this level instead of the recipe task's level."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    """Rollout engine and its options (`rlvr.rollout.engine_config`; `engine: fast` is shorthand for
    the name; the recipe's `engine:` fills what the stage leaves out)."""

    def __post_init__(self) -> None:
        if self.num_problems < 1 or self.batch_size < 1:
            raise ValueError("num_problems and batch_size must be >= 1")
        if self.num_generations < 0:
            raise ValueError(f"num_generations must be >= 0, got {self.num_generations}")
        if self.sampling.temperature <= 0 and self.num_generations > 0:
            raise ValueError("sampling.temperature: must be > 0 when num_generations > 0 (greedy samples "
                             "are all the same)")
        from rlvr.trainer.config import check_max_prompt_length

        check_max_prompt_length(self.max_prompt_length)
        self.engine = as_engine_config(self.engine)  # a bare name from Python callers, as in YAML


def evaluate(policy, examples, prompt_format, cfg: EvalStageConfig, seed: int) -> dict:
    """The eval metrics of `policy` on `examples` (also used by self_improve's rounds);
    `prompt_format`: the recipe's `PromptFormat` (or a template name)."""
    from rlvr.eval import maj_at_k, pass_at_k
    from rlvr.pipeline.sampling import check_prompt_cap, count_truncated_prompts, sample_and_verify
    from rlvr.rollout.base import SamplingParams

    check_prompt_cap(policy, cfg)
    greedy_params = SamplingParams.of(cfg.sampling, temperature=0.0)
    greedy = sample_and_verify(policy, examples, prompt_format, 1, greedy_params, cfg.batch_size,
                               desc="eval greedy", max_prompt_length=cfg.max_prompt_length, engine=cfg.engine)
    firsts = [g[0] for g in greedy]
    metrics = {
        "accuracy": sum(s.correct for s in firsts) / len(firsts),
        "mean_completion_tokens": sum(s.num_tokens for s in firsts) / len(firsts),
        "truncated_fraction": sum(s.truncated for s in firsts) / len(firsts),
        "num_problems": len(firsts),
        # the samples below use the same prompts, so they are counted (and warned about) once
        "prompts_truncated": count_truncated_prompts(greedy, cfg.max_prompt_length, "eval"),
    }
    sources = _sources(examples)
    for name, rows in sources.items():
        metrics[f"accuracy/{name}"] = sum(firsts[i].correct for i in rows) / len(rows)
    if cfg.num_generations > 0:
        params = SamplingParams.of(cfg.sampling, seed=seed)
        n = cfg.num_generations
        sampled = sample_and_verify(policy, examples, prompt_format, n, params,
                                    max(1, cfg.batch_size // n), desc=f"eval num_generations={n}",
                                    max_prompt_length=cfg.max_prompt_length, engine=cfg.engine)
        solved = [pass_at_k(n, sum(s.correct for s in g), n) for g in sampled]
        metrics[f"pass@{n}"] = sum(solved) / len(sampled)
        metrics[f"maj@{n}"] = sum(
            maj_at_k([s.answer for s in g], [s.correct for s in g], n, equivalent=_same_answer)
            for g in sampled) / len(sampled)
        metrics["sample_accuracy"] = sum(s.correct for g in sampled for s in g) / (n * len(sampled))
        for name, rows in sources.items():
            metrics[f"pass@{n}/{name}"] = sum(solved[i] for i in rows) / len(rows)
    return metrics


def _sources(examples) -> dict[str, list[int]]:
    """Row indices per task source (the `source/split/index` id prefix) when a mixture has more
    than one; empty otherwise (the overall figures say it all)."""
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        if "/" in ex.id:
            groups.setdefault(ex.id.split("/")[0], []).append(i)
    return groups if len(groups) > 1 else {}


def _same_answer(a: str, b: str) -> bool:
    # Votes group answers by their normalised text: the verifier already judged correctness,
    # and a string comparison keeps voting cheap for hundreds of problems.
    return a.strip() == b.strip()


def eval_options():
    return EvalStageConfig


@register_stage("eval", eval_options, trains=False, scores_held_out=True)
def run_eval(ctx, cfg: EvalStageConfig) -> dict:
    policy = ctx.load_policy(train=False)
    examples = ctx.make_task(cfg.difficulty, for_eval=True).held_out(cfg.num_problems)
    metrics = evaluate(policy, examples, ctx.recipe.prompt_format, cfg, ctx.seed)
    ctx.write_metrics([{"step": 0, **{f"eval/{k}": v for k, v in metrics.items()}}])
    return metrics
