import argparse, sys
sys.path.insert(0, "benchmarks")
from test_time_compute_demo import parse_args
from rlvr.cli_setup import build_context
from rlvr.eval.curves import build_pools, scorer_auc
from rlvr.reward_models.fit import FitConfig, fit_reward_model
from rlvr.reward_models.train import RewardTrainConfig
from rlvr.search import Problem, RewardModelScorer
from rlvr.tasks import make_task, render_prompt
import torch
args = parse_args(["--model", "/tmp/arith/7-grpo-2/model"])
ns = argparse.Namespace(model=args.model, orm=None, prm=None, judge=None, device="cpu", seed=0, threads=1,
                        temperature=0.8, max_new_tokens=64, max_step_tokens=32, step_separator=",", engine="auto")
ctx, policy = build_context(ns)
def problems(split, n):
    out = []
    for level in (2, 3):
        task = make_task("arithmetic", seed=0, difficulty=level, ops=["+"])
        exs = task.sample(n) if split == "train" else task.held_out(n)
        out += [Problem(render_prompt(ex, policy.tokenizer, template="plain"), ex) for ex in exs]
    return out
fit = FitConfig(kind="orm", num_generations=8, train=RewardTrainConfig(epochs=8, learning_rate=1e-3, batch_size=16))
rm, facts, recs = fit_reward_model(ctx, policy.model, problems("train", 48), fit, progress=False)
ctx.scorers["orm"] = RewardModelScorer(rm)
pools = build_pools(ctx, problems("held_out", 16), 8, ["orm"])
for p in pools:
    p.scores["shorter"] = [-t for t in p.tokens]
    p.scores["longer"] = [float(t) for t in p.tokens]
print({k: round(scorer_auc(pools, k), 3) for k in ("orm", "shorter", "longer")})
# training records: does the ORM's training-set ranking within a problem hold?
import collections
by = collections.defaultdict(list)
for r in recs:
    by[r.prompt].append((rm.score(r.prompt, r.steps), r.labels[0] >= 1, sum(len(s) for s in r.steps)))
w = pr = lw = 0
for g in by.values():
    good = [x for x in g if x[1]]; bad = [x for x in g if not x[1]]
    w += sum((a[0] > b[0]) + 0.5 * (a[0] == b[0]) for a in good for b in bad)
    lw += sum((a[2] < b[2]) + 0.5 * (a[2] == b[2]) for a in good for b in bad)
    pr += len(good) * len(bad)
print("train within-problem AUC orm", round(w / pr, 3), "shorter", round(lw / pr, 3))
