"""`rlvr eval`: pass@k, maj@k and best-of-N scaling curves of a model on a task.

    rlvr eval --model runs/arith/02-grpo/model --task arithmetic --difficulty 1,2,3 \
        --num-problems 20 --num-generations 16 --orm rm/orm --prm rm/prm --output-dir out/eval

Samples num_generations solutions per held-out problem once, then estimates every N up to it by
subsampling: pass@N (unbiased), majority vote, and best-of-N / weighted vote for each loaded scorer.
`--thinking-budgets 16,32,64` adds accuracy against a thinking budget (budget forcing).
Writes `eval.md`, `accuracy_vs_n.png`, `accuracy_vs_tokens.png`, `points.json`.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from rlvr.cli_setup import add_model_arguments, add_task_arguments

    add_model_arguments(parser)
    add_task_arguments(parser)
    g = parser.add_argument_group("evaluation")
    g.add_argument("--num-generations", type=int, default=16,
                   help="samples per problem (curves go up to N = num-generations)")
    g.add_argument("--n", dest="old_n", default=None, help=argparse.SUPPRESS)  # renamed: says so
    g.add_argument("--aggregation", default="last", choices=["last", "min", "prod", "mean"],
                   help="how a PRM's step scores become a solution score")
    g.add_argument("--draws", type=int, default=64, help="random N-subsets averaged per problem and N")
    g.add_argument("--thinking-budgets", default="", help="thinking budgets in tokens, comma-separated")
    g.add_argument("--output-dir", default="eval_out")


def main(args: argparse.Namespace) -> int:
    from rlvr.eval.curves import build_pools, compute_optimal, pool_curves, scorer_auc
    from rlvr.eval.report import full_report, plot_curves
    from rlvr.search.base import SearchError
    from rlvr.cli_setup import build_context, load_problems, parse_ints

    if args.old_n is not None:
        raise SearchError("--n was renamed: use --num-generations (samples per problem, the name recipes use)")
    if args.num_generations < 1:
        raise SearchError(f"--num-generations must be >= 1, got {args.num_generations}")
    ctx, policy = build_context(args)
    problems = load_problems(args, policy.tokenizer)
    scorers = [name for name in ctx.scorers if name != "verifier"]
    pools = build_pools(ctx, problems, args.num_generations, scorers, args.aggregation)
    points = pool_curves(pools, draws=args.draws, seed=args.seed)
    if args.thinking_budgets:
        from rlvr.search.compare import compare_methods

        budgets = parse_ints(args.thinking_budgets, "--thinking-budgets")
        thinking_points, _ = compare_methods(problems, ctx, {"thinking": None}, budgets, thinking_unit=1)
        points += thinking_points
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = full_report(points, compute_optimal(points), title=f"Evaluation of {args.model} on {args.task}")
    for name in scorers:
        auc = scorer_auc(pools, name)
        report += (f"\nDiscrimination of {name}: P[a correct sample outscores an incorrect one of the same problem] = "
                   + (f"{auc:.3f}" if auc is not None else "n/a (no problem has both)") + "\n")
    (out / "eval.md").write_text(report)
    plot_curves([p for p in points if p.method != "thinking"], out / "accuracy_vs_n.png", x="n")
    plot_curves(points, out / "accuracy_vs_tokens.png", x="tokens")
    (out / "points.json").write_text(json.dumps([asdict(p) for p in points], indent=1))
    print(report)
    print(f"wrote {out}/eval.md and plots")
    return 0
