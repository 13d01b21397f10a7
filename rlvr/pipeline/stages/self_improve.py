"""`self_improve` stage: rounds of generate -> verify -> keep correct -> train -> eval.

Each round samples num_generations completions for fresh problems at the current difficulty, keeps the verified
correct ones (as `rejection_sampling` does), trains on them (SFT on the kept samples, or a GRPO
run on the task at that difficulty), then scores the fixed held-out list. A curriculum moves the
difficulty up when the round's pass rate exceeds `curriculum.up_threshold` and down when it falls
below `curriculum.down_threshold`. The loop stops at `rounds`, or when the held-out accuracy has
not improved for `patience` rounds; the best round's model becomes the stage's `model/`.

Each round has its own folder `round-XX/` (its training checkpoints and `ROUND.json`, written
last), so `--resume auto` skips finished rounds and continues the interrupted one.
"""
from __future__ import annotations

import dataclasses

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rlvr.pipeline.stages.eval import EvalStageConfig
from rlvr.pipeline.stages.registry import register_stage
from rlvr.pipeline.stages.rejection_sampling import RejectionSamplingConfig
from rlvr.rollout.engine_config import EngineConfig
from rlvr.rollout.sampling import SamplingConfig
from rlvr.trainer.config import GRPOConfig
from rlvr.trainer.sft_config import SFTStageConfig

ROUND_FILE = "ROUND.json"


@dataclass
class CurriculumConfig:
    """How the training difficulty follows the pass rate."""

    start: int | None = None
    """First round's level; None = the recipe task's difficulty."""
    min_level: int = 1
    """Lowest level the curriculum may go to."""
    max_level: int = 5
    """Highest level the curriculum may go to."""
    up_threshold: float = 0.8
    """Pass rate (fraction of sampled completions correct) above which the level goes up."""
    down_threshold: float = 0.2
    """Pass rate below which the level goes down."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_level <= self.max_level:
            raise ValueError(f"need 1 <= min_level <= max_level, got {self.min_level}, {self.max_level}")
        if not 0 <= self.down_threshold < self.up_threshold <= 1:
            raise ValueError("need 0 <= down_threshold < up_threshold <= 1")

    def next_level(self, level: int, pass_rate: float) -> int:
        if pass_rate > self.up_threshold:
            return min(level + 1, self.max_level)
        if pass_rate < self.down_threshold:
            return max(level - 1, self.min_level)
        return level


@dataclass
class SelfImproveConfig:
    """Options of a `self_improve` stage."""

    rounds: int = 3
    """Most rounds to run."""
    patience: int = 1
    """Stop after this many rounds in a row without a held-out accuracy gain above `min_gain`."""
    min_gain: float = 0.0
    """Smallest accuracy gain that counts as an improvement."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """The sampling of every round (generate, eval, grpo) unless those set their own keys; its own
    unset keys come from the recipe's `sampling:`."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    """The rollout engine of every round (generate, eval, grpo) unless those set their own keys;
    its own unset keys come from the recipe's `engine:`."""
    train: Literal["sft", "grpo"] = "sft"
    """How a round trains: SFT on its kept samples, or GRPO on the task at the round's level."""
    generate: RejectionSamplingConfig = field(default_factory=RejectionSamplingConfig)
    """Sampling and keeping (num_generations, max_per_problem, problems per round); no `difficulty`:
    the curriculum sets each round's level."""
    sft: SFTStageConfig = field(default_factory=SFTStageConfig)
    """SFT options per round (with train: sft)."""
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    """GRPO options per round (with train: grpo)."""
    eval: EvalStageConfig = field(default_factory=lambda: EvalStageConfig(num_generations=0))
    """Held-out evaluation after each round (the same problems every round; `difficulty` picks their
    level, as in an eval stage, else the recipe task's)."""
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    """Difficulty schedule."""
    template: str = "r1"
    """Set from the recipe (the prompt template of every round)."""
    instruction: str | None = None
    """Set from the recipe (the r1 templates' instruction of every round)."""
    seed: int = 0
    """Set from the recipe."""

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.patience < 1:
            raise ValueError(f"rounds and patience must be >= 1, got {self.rounds}, {self.patience}")
        if self.generate.difficulty is not None:
            raise ValueError("generate.difficulty: the curriculum sets each round's level; set curriculum.start "
                             "(default: the recipe's task.difficulty), curriculum.min_level and max_level instead")


def self_improve_options():
    return SelfImproveConfig


@register_stage("self_improve", self_improve_options, trains=True, scores_held_out=True)
def run_self_improve(ctx, cfg: SelfImproveConfig) -> dict:
    from rlvr.pipeline.stages.eval import evaluate

    start_level = cfg.curriculum.start or _first_level(ctx.make_task().difficulty)
    state = {"level": start_level, "best": None, "best_model": None, "best_round": None, "stale": 0,
             "model_dir": ctx.model_dir}
    table = []
    held_out = ctx.make_task(cfg.eval.difficulty, for_eval=True).held_out(cfg.eval.num_problems)
    task = ctx.make_task(start_level)
    for r in range(cfg.rounds):
        rdir = ctx.stage_dir / f"round-{r:02d}"
        task.set_difficulty(state["level"])
        if (rdir / ROUND_FILE).is_file():  # finished before an interruption
            row = json.loads((rdir / ROUND_FILE).read_text())
            task.sample(cfg.generate.num_problems)  # keep the problem stream where it was
        else:
            row = _round(ctx, cfg, r, rdir, task, held_out, state["model_dir"], evaluate)
        table.append(row)
        _update(state, row, cfg)
        print("\n" + format_table(table), flush=True)
        ctx.write_metrics(table)
        if state["stale"] >= cfg.patience:
            break
    if ctx.is_main:
        (ctx.stage_dir / "rounds.md").write_text(format_table(table) + "\n")
        _publish_best(ctx, state["best_model"])
    return {"accuracy": state["best"], "best_round": state["best_round"], "rounds_run": len(table),
            "final_difficulty": state["level"], "rounds": table}


def _first_level(difficulty) -> int:
    return difficulty if isinstance(difficulty, int) else min(difficulty)


def _round(ctx, cfg, r: int, rdir: Path, task, held_out, model_dir, evaluate) -> dict:
    """One round: generate, keep correct, train, evaluate; its row of the table."""
    from rlvr.pipeline.context import MODEL_DIR
    from rlvr.pipeline.stages.rejection_sampling import keep_correct
    from rlvr.tasks.prompts import PromptFormat
    from rlvr.trainer.grpo import run_grpo
    from rlvr.trainer.sft import run_sft

    from accelerate import PartialState

    resume = rdir.is_dir()
    PartialState().wait_for_everyone()  # every process looks before the main one creates the folder
    if ctx.is_main:
        rdir.mkdir(parents=True, exist_ok=True)
    policy = _round_context(ctx, model_dir).load_policy()
    level = task.difficulty
    examples = task.sample(cfg.generate.num_problems)
    fmt = PromptFormat(cfg.template, cfg.instruction)
    kept, gen = keep_correct(policy, examples, fmt, cfg.generate, cfg.seed + r)
    trained = cfg.train == "grpo" or bool(kept)  # SFT with nothing kept: the round trains nothing
    if cfg.train == "sft" and kept:
        run_sft(policy, [{"prompt": k["prompt"], "completion": k["completion"]} for k in kept],
                cfg.sft, rdir, resume=resume, seed=cfg.seed + r)
    elif cfg.train == "grpo":
        # the recipe's prompt format; a fresh seed per round
        grpo_cfg = dataclasses.replace(cfg.grpo, template=cfg.template, instruction=cfg.instruction, seed=cfg.seed + r)
        run_grpo(policy, task, grpo_cfg, rdir, resume="auto" if resume else None)
    out_model = rdir / MODEL_DIR if trained else model_dir
    scores = evaluate(_round_context(ctx, out_model).load_policy(train=False), held_out, fmt, cfg.eval, cfg.seed)
    row = {"round": r, "difficulty": level, "pass_rate": gen["sample_accuracy"],
           "problems_with_kept": gen["problems_with_kept"], "kept": gen["kept"], "trained": trained,
           "accuracy": scores["accuracy"], "mean_completion_tokens": scores["mean_completion_tokens"],
           "next_difficulty": cfg.curriculum.next_level(level, gen["sample_accuracy"]),
           "model_dir": None if out_model is None else str(out_model)}
    if ctx.is_main:
        (rdir / ROUND_FILE).write_text(json.dumps(row))
    return row


def _round_context(ctx, model_dir):
    import dataclasses

    return dataclasses.replace(ctx, model_dir=None if model_dir is None else Path(model_dir))


def _update(state: dict, row: dict, cfg: SelfImproveConfig) -> None:
    """Move the curriculum, track the best round and the patience counter."""
    state["level"] = row["next_difficulty"]
    state["model_dir"] = row["model_dir"]
    if state["best"] is None or row["accuracy"] > state["best"] + cfg.min_gain:
        state["best"], state["best_round"], state["stale"] = row["accuracy"], row["round"], 0
        state["best_model"] = row["model_dir"]
    else:
        state["stale"] += 1


def _publish_best(ctx, best_model: str | None) -> None:
    """Copy the best round's model to the stage's `model/` (the base model if no round trained)."""
    from rlvr.models import save_policy
    from rlvr.pipeline.context import MODEL_DIR

    target = ctx.stage_dir / MODEL_DIR
    shutil.rmtree(target, ignore_errors=True)
    if best_model is None:
        save_policy(ctx.load_policy(), target)
    else:
        shutil.copytree(best_model, target)


def format_table(rows: list[dict]) -> str:
    """The per-round table (markdown)."""
    cols = ["round", "difficulty", "pass_rate", "problems_with_kept", "kept", "trained", "accuracy",
            "next_difficulty"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    return "\n".join(lines)
