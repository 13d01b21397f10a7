"""`python -m rlvr.reward_models`: train an ORM or PRM on a policy's own samples.

    python -m rlvr.reward_models --model runs/arith/02-grpo/model --task arithmetic --difficulty 1,2 \
        --kind prm --label-type soft --step-separator '\\n' --output-dir rm/prm

Training problems come from the task's training stream (never its held-out split).
"""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rlvr.cli_setup import add_model_arguments, add_task_arguments

    add_model_arguments(parser)
    add_task_arguments(parser)
    g = parser.add_argument_group("reward model")
    g.add_argument("--kind", choices=["orm", "prm"], default="orm")
    g.add_argument("--num-generations", type=int, default=8,
                   help="solutions sampled per training problem")
    g.add_argument("--samples-per-problem", dest="old_samples", default=None, help=argparse.SUPPRESS)  # renamed: says so
    g.add_argument("--rollouts-per-step", type=int, default=4, help="PRM: Math-Shepherd rollouts per step prefix")
    g.add_argument("--label-type", choices=["hard", "soft"], default="hard")
    g.add_argument("--backbone", choices=["policy", "tiny"], default="policy")
    g.add_argument("--epochs", type=int, default=3)
    g.add_argument("--learning-rate", type=float, default=5e-4)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--pairwise-weight", type=float, default=0.0,
                   help="weight of a within-problem ranking term beside the BCE (0: BCE only)")
    g.add_argument("--mixed-problems-only", action="store_true",
                   help="train only on problems with both right and wrong sampled solutions")
    g.add_argument("--output-dir", required=True, help="where the reward model is saved")


def main(args: argparse.Namespace) -> int:
    from rlvr.reward_models.fit import FitConfig, fit_reward_model
    from rlvr.reward_models.train import RewardTrainConfig
    from rlvr.search.base import SearchError
    from rlvr.cli_setup import build_context, load_problems

    if args.old_samples is not None:
        raise SearchError("--samples-per-problem was renamed: use --num-generations (samples per problem, "
                          "the name recipes use)")
    for name in ("orm", "prm", "judge"):
        setattr(args, name, None)  # the policy alone makes the labels
    ctx, policy = build_context(args)
    problems = load_problems(args, policy.tokenizer, split="train")  # never the held-out split
    cfg = FitConfig(kind=args.kind, num_generations=args.num_generations,
                    rollouts_per_step=args.rollouts_per_step, label_type=args.label_type, backbone=args.backbone,
                    train=RewardTrainConfig(epochs=args.epochs, learning_rate=args.learning_rate,
                                            batch_size=args.batch_size, seed=args.seed,
                                            pairwise_weight=args.pairwise_weight,
                                            mixed_problems_only=args.mixed_problems_only))
    model, facts, _ = fit_reward_model(ctx, policy.model, problems, cfg)
    model.config.base = args.model
    path = model.save(args.output_dir)
    (path / "fit.json").write_text(json.dumps(facts, indent=1))
    print(json.dumps(facts, indent=1))
    print(f"saved {args.kind.upper()} to {path}")
    return 0
