"""benchmarks/compare_precisions.py on a small recipe: one run per (precision, seed) with the
precision and seed set on the command line, the eval accuracies and GRPO signals of each in the
table and the JSON, and a second call reads the finished runs instead of running them again."""
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPE = {
    "name": "precisions",
    "model": {"name_or_path": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                               "intermediate_size": 64}},
    "task": {"name": "arithmetic", "difficulty": 1, "options": {"ops": ["+"]}},
    "template": "plain",
    "stages": [
        {"type": "grpo", "name": "grpo", "steps": 2, "prompts_per_step": 2, "num_generations": 2,
         "max_new_tokens": 8, "report_to": "none", "sample_every": 0},
        {"type": "eval", "name": "eval", "num_problems": 4, "max_new_tokens": 8},
    ],
}


def _compare(recipe: Path, work: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "compare_precisions.py"), "--recipe", str(recipe),
           "--precisions", "bf16-kahan,fp32", "--seeds", "0", "--work", str(work), "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def test_one_run_per_precision_and_seed_then_read_back(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    work, out = tmp_path / "work", tmp_path / "compare.json"
    done = _compare(recipe, work, out)
    assert "| bf16-kahan | 0 | " in done.stdout and "| fp32 | mean of 1 | " in done.stdout
    runs = json.loads(out.read_text())["runs"]
    assert [(r["precision"], r["seed"]) for r in runs] == [("bf16-kahan", 0), ("fp32", 0)]
    for r in runs:
        assert list(r["accuracy"]) == ["eval"] and 0 <= r["accuracy"]["eval"] <= 1
        assert set(r["grpo"]["grpo"]) >= {"reward_first5", "reward_last5", "zero_std_groups"}
        saved = yaml.safe_load((work / f"{r['precision']}-seed0" / "recipe.yaml").read_text())
        assert saved["model"]["precision"] == r["precision"] and saved["seed"] == 0
    logs = {p.name: p.stat().st_mtime_ns for p in work.glob("*.log")}
    assert len(logs) == 2
    _compare(recipe, work, out)  # finished runs are read, not re-run
    assert {p.name: p.stat().st_mtime_ns for p in work.glob("*.log")} == logs
