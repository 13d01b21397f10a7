"""Test-time compute on a real model: ORM and PRM on SmolLM2-135M-Instruct, then every search
method against N on held-out word problems at difficulties 1-5, searched many problems at once.

Two phases, so each fits one device call after the SmolLM2 R1 chain has trained the policy:

    python benchmarks/ttc_smollm2.py rm     --policy runs/bench-smollm2-135m-r1/8-grpo-2/model --work runs/ttc
    python benchmarks/ttc_smollm2.py search --policy runs/bench-smollm2-135m-r1/8-grpo-2/model --work runs/ttc \
        --out benchmarks/results/ttc_smollm2

`rm`: the policy samples solutions to *training* problems (never the held-out ones); Math-Shepherd
labels come from rollouts from every step prefix (a step is one line of the worked solution); from
one labelling pass come the PRM's hard labels (any rollout correct) and soft labels (the fraction).
The ORM needs outcomes only, so it also gets more problems (`--orm-problems`, no rollouts) and is
trained several times (`--orm-variants`: on the PRM's solutions, on growing fractions of all
outcome-labelled problems, on problems with both outcomes only) to measure whether more data or
within-problem data moves its ranking. Every reward model is a copy of the policy's backbone with a
value head (float32 weights); a tenth of the training problems is kept back, and every model's
within-problem AUC on those solutions chooses the ORM kept, the PRM (hard or soft) and its
aggregation; AUC on solutions it trained on is reported beside it (fit against generalisation).
`search`: on the held-out problems, majority vote, ORM/PRM best-of-N and weighted vote from one
pool of max(N) samples per problem (subsampled for every N), and beam search, DVTS, MCTS and
adaptive search run live, all problems at once. Then the compute-optimal choice per difficulty,
chosen on one half of the problems and measured on the other, against PRM best-of-max(N).
Writes ttc.md, ttc.json, pools.json (every pool sample), accuracy_vs_n.png, accuracy_vs_tokens.png
into --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere in the repo

AGGREGATIONS = ("last", "min", "prod", "mean")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phase", choices=["rm", "search"])
    p.add_argument("--policy", required=True, help="the RL-trained policy (a model directory, or 'tiny')")
    p.add_argument("--work", type=Path, default=Path("runs/ttc"), help="where the reward models are kept")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ttc_smollm2"))
    p.add_argument("--task", default="word_problems")
    p.add_argument("--levels", default="1,2,3,4,5")
    p.add_argument("--template", default="r1_chat", help="the prompt template the policy was trained with")
    p.add_argument("--train-problems", type=int, default=64, help="RM training problems per level")
    p.add_argument("--num-generations", type=int, default=8,
                   help="solutions labelled per training problem (more gives the ranking more pairs per problem)")
    p.add_argument("--orm-problems", type=int, default=48,
                   help="more ORM training problems per level (outcome labels only: no rollouts)")
    p.add_argument("--orm-generations", type=int, default=16, help="solutions per extra ORM problem")
    p.add_argument("--orm-variants", default="prm_set,0.5,1,1_mixed",
                   help="ORM study rows: prm_set (the PRM's solutions), fractions of every outcome-labelled "
                        "problem, + _mixed (problems with both outcomes only); the best by validation AUC is kept")
    p.add_argument("--rm-deadline", type=float, default=240.0,
                   help="seconds after which the rm phase trains no further ORM variant (one is always trained)")
    p.add_argument("--rm-mixed-only", action="store_true", help="PRMs train on problems with both outcomes only")
    p.add_argument("--rollouts-per-step", type=int, default=8, help="Math-Shepherd rollouts from each step")
    p.add_argument("--rm-epochs", type=int, default=2)
    p.add_argument("--rm-lr", type=float, default=2e-5)
    p.add_argument("--rm-batch", type=int, default=32)
    p.add_argument("--rm-pairwise", type=float, default=0.0,
                   help="weight of the within-problem ranking term in reward-model training (0: BCE only)")
    p.add_argument("--num-problems", type=int, default=60, help="held-out problems per level")
    p.add_argument("--ns", default="1,4,16,64")
    p.add_argument("--live-ns", default="4,16,64", help="budgets for beam search, DVTS, MCTS, adaptive")
    p.add_argument("--live", default="mcts,adaptive_policy,beam_search,dvts,adaptive",
                   help="live methods, run in this order at each budget (a deadline cuts the last ones)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--max-new-tokens", type=int, default=192)
    p.add_argument("--max-step-tokens", type=int, default=48)
    p.add_argument("--max-rows", type=int, default=1024,
                   help="sequences per engine call (each prompt width keeps a KV cache this tall; 4096 ran "
                        "out of H200 memory at 8 solutions per problem)")
    p.add_argument("--score-batch", type=int, default=256, help="solutions per reward-model forward")
    p.add_argument("--deadline", type=float, default=480.0,
                   help="seconds after which the search phase starts no new live (method, N); skipped rows are listed")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# ---- shared setup ------------------------------------------------------------------------------
def setup(args):
    """(SearchContext, Policy) for the policy on the fast engine where it applies."""
    import torch

    from rlvr.models import ModelConfig, load_policy
    from rlvr.rollout import choose_engine, make_engine
    from rlvr.search.context import GenerationConfig, SearchContext

    torch.manual_seed(args.seed)
    policy = load_policy(ModelConfig(name_or_path=args.policy), device=args.device, train=False)
    engine = make_engine(choose_engine("auto", policy.model), policy.model, policy.tokenizer)
    generation = GenerationConfig(temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                  max_step_tokens=args.max_step_tokens, step_separator="\n")
    return SearchContext(engine, policy.tokenizer, generation), policy


def problems(args, tokenizer, split: str, per_level: int, skip: int = 0):
    """`per_level` problems of each level (the training stream after its first `skip`, or held out)."""
    from rlvr.search import Problem
    from rlvr.cli_setup import parse_ints
    from rlvr.tasks import make_task
    from rlvr.tasks.prompts import PromptFormat

    fmt = PromptFormat(args.template, None)
    out = []
    for level in parse_ints(args.levels, "--levels"):
        task = make_task(args.task, seed=args.seed, difficulty=level)
        if split == "train" and skip:
            task.sample(skip)  # the stream's first problems went elsewhere (the PRM's)
        examples = task.sample(per_level) if split == "train" else task.held_out(per_level)
        out += [Problem(fmt.render(ex, tokenizer), ex) for ex in examples]
    return out


# ---- phase 1: reward models --------------------------------------------------------------------
def phase_rm(args) -> dict:
    import random

    from rlvr.reward_models.labels import LabeledSolution, orm_labels, prm_labels

    start = time.time()
    ctx, policy = setup(args)
    train = problems(args, policy.tokenizer, "train", args.train_problems)
    random.Random(args.seed).shuffle(train)
    n_val = max(1, len(train) // 10)
    pairs = [(p.prompt, p.example) for p in train]
    soft = prm_labels(ctx, pairs, args.num_generations, args.rollouts_per_step, "soft", rows_per_call=args.max_rows)
    labelled = time.time()
    print(f"labelled {len(soft)} solutions ({sum(len(r.labels) for r in soft)} steps) in {labelled - start:.0f} s",
          flush=True)
    outcome = [float(r.labels[-1] >= 1.0) for r in soft]
    prm_set_orm = [LabeledSolution(r.prompt, r.steps, [o]) for r, o in zip(soft, outcome)]
    # More outcome-labelled solutions, on problems after the PRM's in each level's stream: the ORM's
    # labels need no rollouts, so its data can grow cheaply (the data-scaling rows below).
    extra = problems(args, policy.tokenizer, "train", args.orm_problems, skip=args.train_problems)
    random.Random(args.seed + 1).shuffle(extra)
    extra_pairs = [(p.prompt, p.example) for p in extra if p.prompt not in {q.prompt for q in train}]
    extra_orm = orm_labels(ctx, extra_pairs, args.orm_generations, rows_per_call=args.max_rows) if extra_pairs else []
    val_prompts = {p.prompt for p in train[:n_val]} | {p for p, _ in extra_pairs[:len(extra_pairs) // 10]}
    # Every model is judged on the same held-back solutions, by within-problem AUC of its final score.
    val = [r for r in prm_set_orm + extra_orm if r.prompt in val_prompts]
    val_correct = [r.labels[-1] >= 1.0 for r in val]
    facts = {"policy": args.policy, "train_problems": len(train), "orm_extra_problems": len(extra_pairs),
             "validation_problems": len({r.prompt for r in val}), "validation_solutions": len(val),
             "solutions": len(soft), "orm_extra_solutions": len(extra_orm),
             "steps": sum(len(r.labels) for r in soft), "solution_accuracy": _mean(outcome),
             "step_label_mean_soft": _mean([x for r in soft for x in r.labels[:-1]]),
             "step_label_positive_hard": _mean([x > 0 for r in soft for x in r.labels[:-1]]),
             "label_seconds": labelled - start, "orm_label_seconds": time.time() - labelled,
             "validation_auc_shorter": _auc([-len("".join(r.steps)) for r in val], val, val_correct),
             "models": {}, "orm_study": {}}
    print(f"ORM data: {len(extra_orm)} more solutions to {len(extra_pairs)} problems in "
          f"{facts['orm_label_seconds']:.0f} s; validation {len(val)} solutions", flush=True)
    # The PRMs first: the search needs them; the ORM study may be cut by the deadline.
    prm_records = {
        "prm_hard": [LabeledSolution(r.prompt, r.steps, [float(x > 0.0) for x in r.labels[:-1]] + [o])
                     for r, o in zip(soft, outcome)],
        "prm_soft": soft,
    }
    for name, recs in prm_records.items():
        fit_part = [r for r in recs if r.prompt not in val_prompts]
        model, info = train_one(args, ctx, policy, "prm", name.split("_")[1], fit_part, val, val_correct,
                                mixed=args.rm_mixed_only)
        if model is None:
            raise SystemExit(f"{name}: {info['skipped']} (drop --rm-mixed-only)")
        facts["models"][name] = info
        model.save(args.work / name)
        print(f"{name}: {json.dumps(info)}", flush=True)
    fit_prm_set = [r for r in prm_set_orm if r.prompt not in val_prompts]
    fit_all = fit_prm_set + [r for r in extra_orm if r.prompt not in val_prompts]
    for variant in [v for v in args.orm_variants.split(",") if v]:
        if facts["models"].get("orm") and time.time() - start > args.rm_deadline:
            facts["orm_study"][variant] = {"skipped": f"past the {args.rm_deadline:.0f} s deadline",
                                           "val_auc": {"last": None}}
            continue
        records, mixed = orm_variant_records(variant, fit_prm_set, fit_all, args.seed)
        model, info = train_one(args, ctx, policy, "orm", "hard", records, val, val_correct, mixed=mixed)
        facts["orm_study"][variant] = info
        print(f"orm[{variant}]: {json.dumps(info)}", flush=True)
        best = max(facts["orm_study"].values(), key=lambda i: i["val_auc"]["last"] or 0.0)
        if best is info and model is not None:  # the best ORM so far (by validation AUC) goes to search
            model.save(args.work / "orm")
            facts["models"]["orm"] = {**info, "variant": variant}
        del model
    prm_choice = max(((n, a) for n in prm_records for a in AGGREGATIONS),
                     key=lambda na: facts["models"][na[0]]["val_auc"][na[1]] or 0.0)
    facts["prm_choice"] = {"model": prm_choice[0], "aggregation": prm_choice[1]}
    facts["seconds"] = time.time() - start
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "rm_facts.json").write_text(json.dumps(facts, indent=1))
    print(json.dumps(facts["prm_choice"]), f"phase rm {facts['seconds']:.0f} s", flush=True)
    return facts


def orm_variant_records(variant: str, prm_set: list, every: list, seed: int) -> tuple[list, bool]:
    """(training records, mixed problems only) of an ORM study row: `prm_set` (the PRM's own
    solutions), a fraction of every outcome-labelled problem (`0.25`, `1`: whole problems, nested),
    `_mixed` after either for problems with both outcomes only."""
    import random

    from rlvr.reward_models.train import by_problem

    name, mixed = (variant[:-len("_mixed")], True) if variant.endswith("_mixed") else (variant, False)
    if name == "prm_set":
        return prm_set, mixed
    try:
        fraction = float(name)
    except ValueError:
        raise SystemExit(f"--orm-variants: unknown variant {variant!r} (prm_set, a fraction like 0.5, "
                         "either + _mixed)") from None
    groups = by_problem(every)
    random.Random(seed).shuffle(groups)
    kept = groups[:max(1, round(fraction * len(groups)))]
    return [every[i] for idx in kept for i in idx], mixed


def train_one(args, ctx, policy, kind: str, label_type: str, records, val, val_correct, mixed: bool):
    """A reward model on a copy of the policy's backbone trained on `records`: (model, facts)."""
    from rlvr.eval.curves import auc_interval, score_spread, within_problem_auc
    from rlvr.reward_models.fit import FitConfig, make_backbone_model
    from rlvr.reward_models.train import (RewardTrainConfig, evaluate_loss, mixed_outcome_records,
                                          train_reward_model)

    cfg = RewardTrainConfig(epochs=args.rm_epochs, learning_rate=args.rm_lr, batch_size=args.rm_batch, seed=args.seed,
                            pairwise_weight=args.rm_pairwise, mixed_problems_only=mixed)
    model = make_backbone_model(policy.model, policy.tokenizer, FitConfig(kind=kind, label_type=label_type),
                                ctx.separator)
    model.score_batch_size = args.score_batch
    used = mixed_outcome_records(records) if mixed else records
    if not used:
        return None, {"records": 0, "skipped": "no problem with both a right and a wrong solution",
                      "val_auc": {"last": None}}
    t0 = time.time()
    losses = train_reward_model(model, records, cfg, progress=True)
    seen = used[:: max(1, len(used) // 2000)]  # up to ~2000 training solutions: fit, against generalisation
    seen_correct = [r.labels[-1] >= 0.5 for r in seen]
    aggregations = AGGREGATIONS if kind == "prm" else ("last",)
    groups = {agg: validation_groups(model, val, val_correct, agg) for agg in aggregations}
    info = {"records": len(used), "problems": len({r.prompt for r in used}), "mixed_problems_only": mixed,
            "epoch_losses": losses, "train_seconds": time.time() - t0,
            "val_auc": {agg: within_problem_auc(g) for agg, g in groups.items()},
            # problems are the unit of noise: with a few dozen, the interval says how far to trust the AUC
            "val_auc_90": {agg: auc_interval(g) for agg, g in groups.items()},
            "val_score_spread": {agg: score_spread(g) for agg, g in groups.items()},
            "train_auc": within_problem_auc(validation_groups(model, seen, seen_correct, "last"))}
    if kind == "orm":  # the validation records carry outcome labels only: a loss for the ORM alone
        info["val_loss"] = evaluate_loss(model, val)
    return model, info


def _groups(scores: list[float], records, correct: list[bool]) -> list[tuple[list[float], list[bool]]]:
    """(scores, correct) per problem, for the within-problem measures of rlvr.eval.curves."""
    by_problem: dict[str, tuple[list[float], list[bool]]] = {}
    for r, s, c in zip(records, scores, correct):
        group = by_problem.setdefault(r.prompt, ([], []))
        group[0].append(s)
        group[1].append(c)
    return list(by_problem.values())


def _auc(scores: list[float], records, correct: list[bool]) -> float | None:
    from rlvr.eval.curves import within_problem_auc

    return within_problem_auc(_groups(scores, records, correct))


def validation_groups(model, records, correct: list[bool], aggregation: str) -> list:
    """The model's solution scores (steps aggregated) on `records`, grouped by problem."""
    from rlvr.reward_models.model import aggregate

    step_scores = model.step_scores_many([(r.prompt, r.steps) for r in records])
    return _groups([aggregate(s, aggregation) for s in step_scores], records, correct)


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


# ---- phase 2: search ---------------------------------------------------------------------------
def live_methods(names: list[str], aggregation: str, thresholds: dict[str, float], max_new_tokens: int) -> dict:
    """The live search methods by name; `thresholds`: the adaptive check's cut per scorer ('prm',
    'confidence'), calibrated on held-out pool samples."""
    from rlvr.eval.curves import CONFIDENCE
    from rlvr.search import AdaptiveConfig, BeamSearchConfig, BestOfNConfig, DVTSConfig, MCTSConfig

    beam = BeamSearchConfig(beam_width=1, expansions=4, max_steps=10, aggregation=aggregation)
    table = {
        "beam_search": ("beam_search (PRM)", beam),
        "dvts": ("dvts (PRM)", DVTSConfig(expansions=4, max_steps=10, aggregation=aggregation)),
        "mcts": ("mcts (PRM)", MCTSConfig(expansions=3, max_depth=10, aggregation=aggregation)),
        "adaptive": ("adaptive (PRM conf.)", AdaptiveConfig(
            check="confidence", confidence_scorer="prm", threshold=thresholds["prm"], aggregation=aggregation,
            token_budget=64 * max_new_tokens, beam=beam,
            best_of_n=BestOfNConfig(scorer="prm", aggregation=aggregation))),
        # the policy's own confidence, which ranks a problem's solutions better than the reward models
        "adaptive_policy": ("adaptive (policy conf.)", AdaptiveConfig(
            check="confidence", confidence_scorer=CONFIDENCE, threshold=thresholds[CONFIDENCE],
            token_budget=64 * max_new_tokens, best_of_n=BestOfNConfig(scorer=CONFIDENCE))),
    }
    return {table[n][0]: (n.removesuffix("_policy"), table[n][1]) for n in names}


def phase_search(args) -> int:
    import torch

    from rlvr.eval.curves import (CONFIDENCE, auc_interval, build_pools, compute_optimal, score_spread, scorer_auc,
                                  vote_scorer_agreement, within_problem_auc)
    from rlvr.eval.report import full_report, plot_curves
    from rlvr.reward_models.model import load_reward_model
    from rlvr.search import RewardModelScorer
    from rlvr.search.adaptive import calibrate_threshold
    from rlvr.search.compare import compare_methods
    from rlvr.cli_setup import parse_ints

    start = time.time()
    facts = json.loads((args.work / "rm_facts.json").read_text())
    choice = facts["prm_choice"]
    agg = choice["aggregation"]
    ctx, policy = setup(args)
    device = str(policy.device)
    for kind, name in (("orm", "orm"), ("prm", choice["model"])):
        rm = load_reward_model(args.work / name, expect=kind, device=device)
        rm.score_batch_size = args.score_batch
        ctx.scorers[kind] = RewardModelScorer(rm)
    held_out = problems(args, policy.tokenizer, "held_out", args.num_problems)
    ns = parse_ints(args.ns, "--ns")
    # the policy's own confidence beside the reward models: the baseline they have to beat
    pools = build_pools(ctx, held_out, max(ns), ["orm", "prm", CONFIDENCE], agg,
                        chunk=max(1, args.max_rows // max(ns)))
    pooled = time.time()
    print(f"pools: {len(held_out)} problems x {max(ns)} samples in {pooled - start:.0f} s", flush=True)
    rename = {"majority": "majority_vote", "best_of_n[orm]": "best_of_n (ORM)", "best_of_n[prm]": "best_of_n (PRM)",
              "weighted_vote[orm]": "weighted_vote (ORM)", "weighted_vote[prm]": "weighted_vote (PRM)",
              "best_of_n[confidence]": "best_of_n (policy confidence)",
              "weighted_vote[confidence]": "weighted_vote (policy confidence)",
              "pass@N": "pass@N (coverage bound)"}
    auc = {k: scorer_auc(pools, k) for k in ("orm", "prm", CONFIDENCE)}
    # Length as a scorer: how far a reward model's ranking could come from length alone.
    auc["shorter"] = within_problem_auc([([-t for t in p.tokens], p.correct) for p in pools])
    pool_groups = {k: [(p.scores[k], p.correct) for p in pools] for k in ("orm", "prm", CONFIDENCE)}
    auc_90 = {k: auc_interval(g) for k, g in pool_groups.items()}
    spread = {k: score_spread(g) for k, g in pool_groups.items()}
    # where a scorer's pick differs from the vote's, per level: what a good AUC can and cannot buy
    agree_n = 16 if 16 in ns else max(ns)
    levels = sorted({p.difficulty for p in pools})
    agreement = {k: {str(level): vote_scorer_agreement([p for p in pools if level in ("all", p.difficulty)], k, agree_n)
                     for level in ["all", *levels]} for k in ("orm", "prm", CONFIDENCE)}
    # The confidence threshold of adaptive search, from held-out pool samples of the *first* half
    # only (the second half is where the compute-optimal choice is measured).
    half_a = [i for i in range(len(held_out)) if i % 2 == 0]
    correct = [c for i in half_a for c in pools[i].correct]
    thresholds = {k: min(1.0, calibrate_threshold([s for i in half_a for s in pools[i].scores[k]], correct))
                  for k in ("prm", CONFIDENCE)}  # calibration says inf when none was right
    live_ns = parse_ints(args.live_ns, "--live-ns")
    methods = live_methods([m for m in args.live.split(",") if m], agg, thresholds, args.max_new_tokens)
    outcomes, live_seconds, skipped = [], {}, []
    for n in live_ns:  # every method at a budget before any at the next: a deadline cuts the largest N
        for label, spec in methods.items():
            if time.time() - start + forecast_seconds(live_seconds, label, n) > args.deadline:
                skipped.append(f"{label} N={n}")
                continue
            t0 = time.time()
            _, got = compare_methods(held_out, ctx, {label: spec}, [n], show_progress=False, max_rows=args.max_rows)
            outcomes += got
            live_seconds[f"{label} N={n}"] = time.time() - t0
            print(f"{label} N={n}: acc {sum(o.correct for o in got) / len(got):.3f} "
                  f"tokens {sum(o.tokens for o in got) / len(got):.0f} in {live_seconds[f'{label} N={n}']:.0f} s",
                  flush=True)
    points = _points(pools, outcomes, range(len(held_out)), ns, rename, args.seed)
    optimal = optimal_vs_best_of_n(pools, outcomes, held_out, ns, rename, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    report = full_report(points, compute_optimal(points, exclude=("pass@N (coverage bound)",)),
                         title="Test-time compute on SmolLM2-135M-Instruct (measured)",
                         excluded="pass@N, the coverage bound")
    header = (f"Policy `{args.policy}`; {len(held_out)} held-out {args.task} problems ({args.num_problems} per level "
              f"{args.levels}); temperature {args.temperature}, max {args.max_new_tokens} new tokens, a step = one "
              f"line. PRM ({choice['model']}, aggregation `{agg}`, chosen by validation AUC) trained on "
              f"{facts['solutions']} solutions to {facts['train_problems']} training problems; ORM "
              f"({facts['models']['orm'].get('variant', 'prm_set')}) on {facts['models']['orm']['records']} "
              f"solutions. Pool: {max(ns)} samples "
              f"per problem in {pooled - start:.0f} s; live search {sum(live_seconds.values()):.0f} s; "
              f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}.")
    report = report.replace("\n\n", f"\n\n{header}\n\n", 1)
    report += ("\nWithin-problem AUC on the held-out pool samples (P[a correct sample outscores a wrong one of "
               "the same problem]; `shorter` ranks by fewer tokens, `confidence` by the policy's own mean token "
               "probability): "
               + ", ".join(f"{k.upper()} {v:.3f}" if v is not None else f"{k.upper()} n/a" for k, v in auc.items())
               + "; 90% intervals over problems: "
               + ", ".join(f"{k.upper()} {lo:.3f}-{hi:.3f}" for k, (lo, hi) in
                           ((k, i) for k, i in auc_90.items() if i is not None))
               + "; score spread within / between problems: "
               + ", ".join(f"{k.upper()} {v['within']:.3f} / {v['between']:.3f}" for k, v in spread.items()) + "\n")
    report += "\n" + agreement_table(agreement, agree_n) + "\n"
    report += "\n" + optimal_table(optimal) + "\n"
    if skipped:
        report += f"\nNot run (past the {args.deadline:.0f} s deadline): {', '.join(skipped)}\n"
    (args.out / "ttc.md").write_text(report)
    plot_curves(points, args.out / "accuracy_vs_n.png", x="n", title="accuracy vs N")
    plot_curves(points, args.out / "accuracy_vs_tokens.png", x="tokens", title="accuracy vs tokens")
    (args.out / "ttc.json").write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()}, "reward_models": facts, "auc": auc,
        "auc_90": auc_90, "score_spread": spread, "vote_scorer_agreement": {"n": agree_n, "shares": agreement},
        "adaptive_thresholds": thresholds, "points": [asdict(p) for p in points], "compute_optimal": optimal,
        "live_seconds": live_seconds, "skipped": skipped, "pool_seconds": pooled - start,
        "seconds": time.time() - start}, indent=1))
    # Every pool sample (difficulty, correctness, tokens, answer group, scores): for analyses the
    # table does not make, without sampling again.
    (args.out / "pools.json").write_text(json.dumps([asdict(p) for p in pools], separators=(",", ":")))
    print(report, flush=True)
    return 0


def forecast_seconds(live_seconds: dict[str, float], label: str, n: int) -> float:
    """Expected seconds of `label` at budget n: its time at the largest smaller budget scaled by
    N (the rows it decodes grow with N). 0 when it has not run yet. A method started just before
    the deadline would otherwise run past it, and past the device call's limit, which loses
    every record the phase has not written yet."""
    done = [(int(key.rsplit("=", 1)[1]), secs) for key, secs in live_seconds.items()
            if key.rsplit(" N=", 1)[0] == label]
    smaller = [(m, secs) for m, secs in done if m < n]
    if not smaller:
        return 0.0
    m, secs = max(smaller)
    return secs * n / m


def _points(pools, outcomes, indices, ns, rename, seed):
    """Points of pool methods and live methods over the problems at `indices`."""
    from rlvr.eval.curves import pool_curves
    from rlvr.search.compare import summarize

    indices = list(indices)
    chosen = [pools[i] for i in indices]
    points = [replace(p, method=rename[p.method]) for p in pool_curves(chosen, ns, seed=seed) if p.method in rename]
    for key in dict.fromkeys((o.method, o.n) for o in outcomes):
        per_problem = [o for o in outcomes if (o.method, o.n) == key]  # in problem order
        points += summarize([per_problem[i] for i in indices])
    return points


def optimal_vs_best_of_n(pools, outcomes, held_out, ns, rename, seed) -> dict:
    """Per difficulty, the cheapest (method, N) that matches the reference on half A of the
    problems; then what that choice scores and costs on half B, against the reference on half B.
    The reference is the strongest selector over max(N) pool samples on half A (majority vote,
    best-of-N or weighted vote with any scorer): a weak reward model's best-of-N would make any
    cheap method look compute-optimal."""
    big = max(ns)
    half = {"A": [i for i in range(len(held_out)) if i % 2 == 0], "B": [i for i in range(len(held_out)) if i % 2 == 1]}
    pts = {h: _points(pools, outcomes, idx, ns, rename, seed) for h, idx in half.items()}
    usable = lambda p: not p.method.startswith("pass@")  # noqa: E731 (an oracle is not a choice)
    pool_methods = {rename[k] for k in rename if not k.startswith("pass@")}
    reference = max((p for p in pts["A"] if p.method in pool_methods and p.n == big and p.difficulty is None),
                    key=lambda p: p.accuracy).method
    rows = []
    for level in sorted({p.example.difficulty for p in held_out}):
        ref_a = _find(pts["A"], reference, big, level)
        fits = [p for p in pts["A"] if usable(p) and p.difficulty == level and p.accuracy >= ref_a.accuracy]
        pick = min(fits, key=lambda p: (p.tokens, -p.accuracy))
        got, ref_b = _find(pts["B"], pick.method, pick.n, level), _find(pts["B"], reference, big, level)
        rows.append({"difficulty": level, "method": pick.method, "n": pick.n, "accuracy": got.accuracy,
                     "tokens": got.tokens, "best_of_n_accuracy": ref_b.accuracy, "best_of_n_tokens": ref_b.tokens,
                     "problems": got.problems})
    total = {k: sum(r[k] * r["problems"] for r in rows) / sum(r["problems"] for r in rows)
             for k in ("accuracy", "tokens", "best_of_n_accuracy", "best_of_n_tokens")}
    return {"levels": rows, "overall": total, "reference": f"{reference} N={big}"}


def _find(points, method, n, level):
    return next(p for p in points if p.method == method and p.n == n and p.difficulty == level)


def agreement_table(agreement: dict, n: int) -> str:
    lines = [f"Majority vote against each scorer's best-of-{n} (first {n} samples of each problem; shares of "
             "problems: both right, only the vote, only the scorer, neither):", "",
             "| scorer | level | both | vote only | scorer only | neither |", "|---|---|---|---|---|---|"]
    for scorer, by_level in agreement.items():
        for level, sh in by_level.items():
            lines.append(f"| {scorer} | {level} | {sh['both']:.3f} | {sh['vote_only']:.3f} | {sh['scorer_only']:.3f} | "
                         f"{sh['neither']:.3f} |")
    return "\n".join(lines)


def optimal_table(optimal: dict) -> str:
    lines = [f"Compute-optimal per difficulty (chosen on half A: the cheapest method and N that matches "
             f"{optimal['reference']} there; measured on half B):", "",
             "| level | choice | accuracy | tokens | reference accuracy | reference tokens |", "|---|---|---|---|---|---|"]
    for r in optimal["levels"]:
        lines.append(f"| {r['difficulty']} | {r['method']} N={r['n']} | {r['accuracy']:.3f} | {r['tokens']:.0f} | "
                     f"{r['best_of_n_accuracy']:.3f} | {r['best_of_n_tokens']:.0f} |")
    o = optimal["overall"]
    lines.append(f"| all | per level | {o['accuracy']:.3f} | {o['tokens']:.0f} | {o['best_of_n_accuracy']:.3f} | "
                 f"{o['best_of_n_tokens']:.0f} |")
    lines.append(f"\nTokens of the adaptive choice / the reference: {o['tokens'] / o['best_of_n_tokens']:.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.phase == "rm":
        phase_rm(args)
        return 0
    return phase_search(args)


if __name__ == "__main__":
    sys.exit(main())
