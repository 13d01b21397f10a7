"""A measured sweep of one GRPO stage of a recipe: each variant trains from the same starting model
(e.g. the chain's cold-start SFT) and is scored by the same eval stage, in one process.

    python benchmarks/sweep_grpo.py --recipe recipes/smollm2-135m-r1.yaml \
        --start runs/bench-smollm2-135m-r1/1-cold-start/model --grpo grpo-1 --eval eval-cold-start \
        --variant lr2e-5:learning_rate=2e-5 --variant g16_ds:num_generations=16,dynamic_sampling=true

Each variant's overrides are `key=value` pairs (YAML values) on the grpo stage. Prints a table of
held-out accuracy and the GRPO signal (last-10-step reward, zero-variance groups, entropy) and
writes it as JSON to --out after every variant, so a stopped sweep keeps what it finished.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import yaml

SIGNAL = ("reward/mean", "frac_reward_zero_std", "entropy/mean", "completions/mean_length")


def stage(data: dict, name: str) -> dict:
    return next(s for s in data["stages"] if s.get("name") == name)


def variant_recipe(base: dict, start: str, grpo: str, evaluation: str, overrides: dict) -> dict:
    data = copy.deepcopy(base)
    data["name"] = f"{base['name']}-sweep"
    data["model"]["name_or_path"] = start
    data["stages"] = [{**stage(base, grpo), **overrides, "save_every": 0, "sample_every": 0},
                      stage(base, evaluation)]
    return data


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, pairs = text.partition(":")
    overrides = {}
    for pair in filter(None, pairs.split(",")):
        key, _, value = pair.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    return name, overrides


def tail_mean(rows: list[dict], key: str, n: int = 10) -> float | None:
    values = [r[key] for r in rows[-n:] if key in r]
    return sum(values) / len(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--start", required=True, help="saved model folder every variant starts from")
    parser.add_argument("--grpo", required=True, help="name of the recipe's grpo stage to vary")
    parser.add_argument("--eval", required=True, help="name of the recipe's eval stage that scores it")
    parser.add_argument("--variant", action="append", required=True, help="NAME:key=value,key=value")
    parser.add_argument("--output-dir", default="runs/sweep")
    parser.add_argument("--out", default=None, help="JSON of the results (rewritten after each variant)")
    args = parser.parse_args()

    from rlvr.pipeline.recipe import parse_recipe
    from rlvr.pipeline.runner import run_recipe

    base = yaml.safe_load(Path(args.recipe).read_text())
    results = []
    for text in args.variant:
        name, overrides = parse_variant(text)
        t0 = time.perf_counter()
        folder = Path(args.output_dir) / name
        run_recipe(parse_recipe(variant_recipe(base, args.start, args.grpo, args.eval, dict(overrides))), folder)
        rows = [json.loads(line) for line in (folder / f"0-{args.grpo}" / "metrics.jsonl").read_text().splitlines()]
        scores = json.loads((folder / f"1-{args.eval}" / "metrics.jsonl").read_text().splitlines()[0])
        results.append({"variant": name, "overrides": overrides, "seconds": time.perf_counter() - t0,
                        "eval": {k.removeprefix("eval/"): v for k, v in scores.items() if k != "step"},
                        "last10": {k: tail_mean(rows, k) for k in SIGNAL}, "steps": len(rows)})
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
        print_table(results)


def print_table(results: list[dict]) -> None:
    print("\n| variant | overrides | accuracy | pass@k | last-10 reward | zero-std groups | entropy | s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        passk = next((v for k, v in r["eval"].items() if k.startswith("pass@") and "/" not in k), None)
        s = r["last10"]
        print(f"| {r['variant']} | {r['overrides']} | {r['eval']['accuracy']:.3f} | "
              f"{passk if passk is None else round(passk, 3)} | {s['reward/mean']:.3f} | "
              f"{s['frac_reward_zero_std']:.2f} | {s['entropy/mean']:.3f} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
