"""Does a recipe learn as much in each training precision? Runs `rlvr run RECIPE` once per
(precision, seed) with `--set model.precision=P seed=S`, then prints held-out accuracy after each
eval stage and, per GRPO stage, the signals to read before blaming code: mean reward over the
first and last five steps, the fraction of groups whose rewards are all equal, entropy and the
sampled accuracy at the end.

    python benchmarks/compare_precisions.py [--recipe recipes/arithmetic-r1.yaml]
        [--precisions bf16-kahan,bf16,fp32] [--seeds 0,1,2] [--work runs/precisions]
        [--set KEY=VALUE ...] [--out FILE]

Each run's folder stays under --work/<precision>-seed<S>/ (its summary.json, metrics.jsonl and
the log beside it); a folder whose run finished is read, not re-run, so a stopped comparison continues.
The default recipe takes about a minute a run on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Row, save  # noqa: E402


def run_one(recipe: str, precision: str, seed: int, folder: Path, sets: list[str]) -> None:
    """Run the recipe into `folder` unless a finished run is there."""
    summary = folder / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("finished"):
        return
    cmd = [sys.executable, "-m", "rlvr.cli", "run", recipe, "--output-dir", str(folder), "--resume", "auto",
           "--set", f"model.precision={precision}", f"seed={seed}", *sets]
    with (folder.parent / f"{folder.name}.log").open("w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{precision} seed {seed} failed (exit {done.returncode}); see {log.name}")


def grpo_signals(metrics: list[dict], stage: str) -> dict:
    rows = [r for r in metrics if r.get("stage") == stage]
    if not rows:
        return {}

    def mean(key, part):
        values = [r[key] for r in part if key in r]
        return statistics.fmean(values) if values else None

    return {"reward_first5": mean("reward/mean", rows[:5]), "reward_last5": mean("reward/mean", rows[-5:]),
            "zero_std_groups": mean("frac_reward_zero_std", rows), "entropy_last5": mean("entropy/mean", rows[-5:]),
            "accuracy_last5": mean("accuracy", rows[-5:])}


def read_run(folder: Path) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = {s["name"]: s["metrics"]["accuracy"] for s in summary["stages"]
             if s.get("type") == "eval" and "accuracy" in s.get("metrics", {})}
    grpo = {s["name"]: grpo_signals(metrics, s["name"]) for s in summary["stages"] if s.get("type") == "grpo"}
    return {"accuracy": evals, "grpo": grpo, "seconds": summary.get("seconds_this_session")}


def fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="recipes/arithmetic-r1.yaml")
    p.add_argument("--precisions", default="bf16-kahan,bf16,fp32")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--work", default="runs/precisions", help="a folder per run below it")
    p.add_argument("--set", nargs="*", default=[], help="further recipe overrides for every run")
    p.add_argument("--out", default=None, help="JSON of every run (default: WORK/compare_precisions.json)")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for precision in [x for x in args.precisions.split(",") if x]:
            folder = work / f"{precision}-seed{seed}"
            run_one(args.recipe, precision, seed, folder, args.set)
            runs.append({"precision": precision, "seed": seed, **read_run(folder)})
            print(f"[compare_precisions] {precision} seed {seed}: {runs[-1]['accuracy']}", flush=True)
    evals = list(runs[0]["accuracy"])
    print(f"\n## {args.recipe}: held-out accuracy per eval stage")
    print("| precision | seed | " + " | ".join(evals) + " |")
    print("|---|---|" + "---|" * len(evals))
    for r in runs:
        print(f"| {r['precision']} | {r['seed']} | " + " | ".join(fmt(r["accuracy"].get(e)) for e in evals) + " |")
    for precision in dict.fromkeys(r["precision"] for r in runs):
        mine = [r for r in runs if r["precision"] == precision]
        means = [statistics.fmean(r["accuracy"][e] for r in mine) for e in evals]
        print(f"| {precision} | mean of {len(mine)} | " + " | ".join(fmt(m) for m in means) + " |")
    print("\n## GRPO signals (reward first/last 5 steps, equal-reward groups, entropy and sampled accuracy, last 5)")
    print("| precision | seed | stage | reward first 5 | reward last 5 | zero-std groups | entropy | accuracy |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        for stage, sig in r["grpo"].items():
            print(f"| {r['precision']} | {r['seed']} | {stage} | " + " | ".join(
                fmt(sig.get(k)) for k in ("reward_first5", "reward_last5", "zero_std_groups", "entropy_last5",
                                          "accuracy_last5")) + " |")
    rows = [Row(name=f"{r['precision']} seed {r['seed']}", value=r["accuracy"][evals[-1]], unit="accuracy")
            for r in runs]
    save(args.out or str(work / "compare_precisions.json"), f"held-out accuracy per precision, {args.recipe}",
         rows, {"recipe": args.recipe, "sets": args.set, "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
