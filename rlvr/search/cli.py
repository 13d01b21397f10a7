"""`rlvr search`: compare test-time search methods across budgets N on a task.

    rlvr search --model runs/arith/02-grpo/model --orm rm/orm --prm rm/prm \
        --methods majority_vote,best_of_n,beam_search,mcts,adaptive --ns 1,2,4,8 --output-dir out/search

Writes `search.md` (accuracy and mean tokens per method and N, per difficulty, and the
compute-optimal choice), `accuracy_vs_n.png`, `accuracy_vs_tokens.png`, `points.json` and
`outcomes.jsonl` (one line per method, N and problem).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from rlvr.cli_setup import add_model_arguments, add_task_arguments, parse_ints


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_task_arguments(parser)
    g = parser.add_argument_group("search")
    g.add_argument("--methods", default="majority_vote,best_of_n,beam_search",
                   help="comma-separated methods; METHOD:SCORER picks a scorer (e.g. best_of_n:prm). "
                        "Methods: adaptive, beam_search, best_of_n, dvts, majority_vote, mcts, thinking, weighted_vote")
    g.add_argument("--ns", default="1,2,4,8", help="budgets N (comma-separated)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="method option, e.g. --set beam_search.max_steps=6 --set mcts.value=rollout (repeatable)")
    g.add_argument("--thinking-unit", type=int, default=16, help="thinking tokens per unit of N for 'thinking'")
    g.add_argument("--output-dir", default="search_out", help="where the table, plots and raw results go")


def method_specs(methods: str, overrides: list[str]) -> dict:
    """label -> (method name, config); `best_of_n:prm` sets the scorer, `--set` the other fields."""
    from rlvr.config import apply_overrides
    from rlvr.search.base import SearchError, get_method, make_config

    options: dict = {}
    apply_overrides(options, overrides)
    specs = {}
    for item in [m.strip() for m in methods.split(",") if m.strip()]:
        name, _, scorer = item.partition(":")
        get_method(name)  # unknown names fail here, listing the valid ones
        data = dict(options.get(name, {}))
        if scorer:
            if "scorer" not in {f for f in get_method(name).config_cls.__dataclass_fields__}:
                raise SearchError(f"{name} takes no scorer (got {item!r})")
            data["scorer"] = scorer
        specs[item] = (name, make_config(name, data))
    unknown = set(options) - {label.partition(":")[0] for label in specs}
    if unknown:
        raise SearchError(f"--set for method(s) not being run: {', '.join(sorted(unknown))}")
    return specs


def main(args: argparse.Namespace) -> int:
    from rlvr.eval.curves import compute_optimal
    from rlvr.eval.report import full_report, plot_curves
    from rlvr.search.compare import compare_methods
    from rlvr.cli_setup import build_context, check_scorers, load_problems

    specs = method_specs(args.methods, args.overrides)
    check_scorers({label: cfg for label, (_, cfg) in specs.items()}, args)
    ns = parse_ints(args.ns, "--ns")
    ctx, policy = build_context(args)
    problems = load_problems(args, policy.tokenizer)
    points, outcomes = compare_methods(problems, ctx, specs, ns, args.thinking_unit)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = full_report(points, compute_optimal(points), title=f"Test-time search on {args.task} ({args.model})")
    (out / "search.md").write_text(report)
    plot_curves(points, out / "accuracy_vs_n.png", x="n")
    plot_curves(points, out / "accuracy_vs_tokens.png", x="tokens")
    (out / "points.json").write_text(json.dumps([asdict(p) for p in points], indent=1))
    with open(out / "outcomes.jsonl", "w") as f:
        for o in outcomes:
            f.write(json.dumps(asdict(o)) + "\n")
    print(report)
    print(f"wrote {out}/search.md, accuracy_vs_n.png, accuracy_vs_tokens.png")
    return 0
