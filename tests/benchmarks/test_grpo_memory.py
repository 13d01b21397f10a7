"""benchmarks/grpo_memory.py at the tiny shape on the CPU: each setting is a real `rlvr run` whose
recipe carries the setting, and its row says how many update passes ran."""
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_each_setting_runs_the_recipe_it_names(tmp_path):
    out, work = tmp_path / "memory.json", tmp_path / "work"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grpo_memory.py"), "--shape", "tiny",
                           "--prompts", "2", "--new-tokens", "8", "--steps", "1", "--budgets", "0,24",
                           "--work", str(work), "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["whole batch, split_on_oom off", "whole batch", "micro_batch_tokens 24"]
    assert all(r["value"] > 0 and "host peak RSS" in r["note"] for r in rows.values())  # no CUDA: host memory
    assert "update passes 1;" in rows["whole batch"]["note"]
    passes = int(rows["micro_batch_tokens 24"]["note"].split("update passes ")[1].split(";")[0])
    assert passes > 1
    stage = yaml.safe_load((work / "budget24.yaml").read_text())["stages"][0]
    assert stage["micro_batch_tokens"] == 24 and stage["attention_backends"] == ["math"]
    assert yaml.safe_load((work / "budget0_nosplit.yaml").read_text())["stages"][0]["split_on_oom"] is False
