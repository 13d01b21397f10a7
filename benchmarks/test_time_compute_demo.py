"""Test-time compute on the default recipe's policy: majority vote vs ORM/PRM best-of-N vs beam
search vs MCTS vs adaptive compute, across budgets N, with accuracy and tokens (CPU, minutes).

    rlvr run recipes/arithmetic-r1.yaml --output-dir runs/arithmetic-r1
    python benchmarks/test_time_compute_demo.py --run-dir runs/arithmetic-r1 --out benchmarks/results/ttc

1. ORM and PRM are trained on the policy's own samples of *training* problems (labels from the
   verifier; PRM labels Math-Shepherd style). On this task a step is one column of the worked
   addition (step separator ","), so the PRM has real intermediate steps to score.
2. Every method is measured on the same held-out problems at each N; the table reports accuracy and
   mean generated tokens per problem. Majority vote, best-of-N and weighted vote come from one pool
   of max(N) samples per problem (subsampled for each N); beam search, MCTS and adaptive run live.
   pass@N (an oracle picks) is the coverage bound.
Writes `<out>/test_time_compute.md`, `accuracy_vs_n.png`, `accuracy_vs_tokens.png`, `demo.json`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere in the repo


def last_model_dir(run_dir: Path) -> Path:
    """The model of the last training stage of a `rlvr run` output directory."""
    def index(p: Path) -> int:  # stage folders are "<index>-<name>"; 10 comes after 9
        head = p.name.split("-", 1)[0]
        return int(head) if head.isdigit() else -1

    stages = sorted((p for p in run_dir.iterdir() if (p / "model").is_dir()), key=index)
    if not stages:
        raise SystemExit(f"{run_dir}: no stage folder with a model/ inside; run the recipe first")
    return stages[-1] / "model"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run-dir", type=Path, help="output dir of `rlvr run recipes/arithmetic-r1.yaml`")
    src.add_argument("--model", help="a policy directory (or 'tiny' for a smoke run)")
    p.add_argument("--difficulty", default="2,3", help="held-out levels (the recipe trains on level 2)")
    p.add_argument("--num-problems", type=int, default=12, help="held-out problems per level")
    p.add_argument("--train-problems", type=int, default=24, help="training problems per level for ORM/PRM")
    p.add_argument("--ns", default="1,2,4,8", help="budgets N")
    p.add_argument("--step-separator", default=",", help="a step = one column of the worked addition")
    p.add_argument("--aggregation", default="min", help="PRM aggregation (last, min, prod, mean)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--max-step-tokens", type=int, default=32)
    p.add_argument("--rm-epochs", type=int, default=4)
    p.add_argument("--rm-pairwise", type=float, default=0.0,
                   help="weight of the within-problem ranking term in reward-model training (0: BCE only)")
    p.add_argument("--adaptive-threshold", type=float, default=None,
                   help="PRM confidence that stops escalation (default: calibrated on the PRM's training solutions)")
    p.add_argument("--template", default="plain", help="the recipe's prompt template")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for tiny models on a shared CPU)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/test_time_compute"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    from dataclasses import replace

    from rlvr.eval.curves import build_pools, compute_optimal, pool_curves, scorer_auc
    from rlvr.eval.report import full_report, plot_curves
    from rlvr.reward_models.fit import FitConfig, fit_reward_model
    from rlvr.reward_models.train import RewardTrainConfig
    from rlvr.search import AdaptiveConfig, BeamSearchConfig, BestOfNConfig, MCTSConfig, Problem, RewardModelScorer
    from rlvr.search.adaptive import calibrate_threshold
    from rlvr.search.compare import compare_methods
    from rlvr.cli_setup import build_context, parse_ints
    from rlvr.tasks import make_task, render_prompt

    args = parse_args(argv)
    model = str(last_model_dir(args.run_dir)) if args.run_dir else args.model
    started = time.time()
    ns_args = argparse.Namespace(model=model, orm=None, prm=None, judge=None, device="cpu", seed=args.seed,
                                 threads=args.threads,
                                 temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                 max_step_tokens=args.max_step_tokens, step_separator=args.step_separator)
    ctx, policy = build_context(ns_args)
    levels = parse_ints(args.difficulty, "--difficulty")

    def problems(split: str, n: int) -> list:
        out = []
        for level in levels:
            task = make_task("arithmetic", seed=args.seed, difficulty=level, ops=["+"])
            examples = task.sample(n) if split == "train" else task.held_out(n)
            out += [Problem(render_prompt(ex, policy.tokenizer, template=args.template), ex) for ex in examples]
        return out

    train_rm = RewardTrainConfig(epochs=args.rm_epochs, learning_rate=1e-3, batch_size=16, seed=args.seed,
                                 pairwise_weight=args.rm_pairwise)
    facts, records = {}, {}
    for kind in ("orm", "prm"):
        fit = FitConfig(kind=kind, num_generations=8, rollouts_per_step=4, label_type="soft", train=train_rm)
        rm, facts[kind], records[kind] = fit_reward_model(ctx, policy.model, problems("train", args.train_problems), fit)
        ctx.scorers[kind] = RewardModelScorer(rm)
        print(f"{kind}: {json.dumps({k: v for k, v in facts[kind].items() if k != 'epoch_losses'})}", flush=True)
    # Adaptive compute's confidence threshold, calibrated on the PRM's own training solutions.
    prm = ctx.scorers["prm"].model
    threshold = args.adaptive_threshold
    if threshold is None:
        threshold = calibrate_threshold([prm.score(r.prompt, r.steps, args.aggregation) for r in records["prm"]],
                                        [r.labels[-1] >= 1.0 for r in records["prm"]])
    facts["adaptive_threshold"] = threshold
    rm_done = time.time()

    agg = args.aggregation
    ns = parse_ints(args.ns, "--ns")
    held_out = problems("held_out", args.num_problems)
    ctx.scored_tokens = ctx.generated_tokens = 0
    # Sampling methods: one pool of max(N) samples per problem, every N estimated by subsampling.
    pools = build_pools(ctx, held_out, max(ns), ["orm", "prm"], agg)
    rename = {"majority": "majority_vote", "best_of_n[orm]": "best_of_n (ORM)", "best_of_n[prm]": "best_of_n (PRM)",
              "weighted_vote[prm]": "weighted_vote (PRM)", "pass@N": "pass@N (coverage bound)"}
    points = [replace(p, method=rename[p.method]) for p in pool_curves(pools, ns, seed=args.seed)
              if p.method in rename]
    auc = {name: scorer_auc(pools, name) for name in ("orm", "prm")}
    pooled = time.time()
    # Tree search and adaptive compute run live at every N.
    methods = {
        "beam_search (PRM)": ("beam_search", BeamSearchConfig(expansions=2, max_steps=6, aggregation=agg)),
        "mcts (PRM)": ("mcts", MCTSConfig(expansions=2, max_depth=6, aggregation=agg)),
        "adaptive (PRM conf.)": ("adaptive", AdaptiveConfig(
            check="confidence", confidence_scorer="prm", threshold=threshold, aggregation=agg,
            token_budget=args.max_new_tokens * 16,
            beam=BeamSearchConfig(expansions=2, max_steps=6, aggregation=agg),
            best_of_n=BestOfNConfig(scorer="prm", aggregation=agg))),
    }
    live_points, outcomes = compare_methods(held_out, ctx, methods, ns)
    points += live_points
    levels_used = {}
    for o in outcomes:
        if o.method.startswith("adaptive") and "level" in o.details:
            key = f"N={o.n}"
            levels_used.setdefault(key, {}).setdefault(o.details["level"], 0)
            levels_used[key][o.details["level"]] += 1
    finished = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    header = (f"Policy `{model}`; ORM/PRM trained on {args.train_problems} training problems per level "
              f"(label+train {rm_done - started:.0f} s); sampling pools {pooled - rm_done:.0f} s, live search "
              f"{finished - pooled:.0f} s on the CPU ({args.threads} thread); step separator "
              f"{args.step_separator!r}, PRM aggregation `{agg}`, adaptive threshold {threshold:.3f} (calibrated on the "
              f"PRM's training solutions unless given). Majority, best-of-N and weighted vote are "
              f"estimated from {max(ns)} samples per problem by subsampling N; beam search, MCTS and adaptive "
              f"run live at each N. pass@N is the coverage bound (an oracle picks).")
    report = full_report(points, compute_optimal(points, exclude=("pass@N (coverage bound)",)),
                         title="Test-time compute on arithmetic (measured)",
                         excluded="pass@N, the coverage bound")
    report = report.replace("\n\n", f"\n\n{header}\n\n", 1)
    report += "\nAdaptive: level that produced the answer, per N: " + json.dumps(levels_used) + "\n"
    report += ("\nDiscrimination on the held-out samples (P[a correct sample outscores an incorrect one of the "
               "same problem]): " + ", ".join(f"{k.upper()} {v:.3f}" if v is not None else f"{k.upper()} n/a"
                                               for k, v in auc.items()) + "\n")
    (args.out / "test_time_compute.md").write_text(report)
    plot_curves(points, args.out / "accuracy_vs_n.png", x="n", title="accuracy vs N")
    plot_curves(points, args.out / "accuracy_vs_tokens.png", x="tokens", title="accuracy vs tokens")
    (args.out / "demo.json").write_text(json.dumps({
        "model": model, "args": {k: str(v) for k, v in vars(args).items()}, "reward_models": facts,
        "points": [asdict(p) for p in points], "adaptive_levels": levels_used, "auc": auc,
        "seconds": {"reward_models": rm_done - started, "pools": pooled - rm_done, "live": finished - pooled}},
        indent=1))
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
