"""`accelerate launch -m rlvr run` with two CPU processes: every process runs every stage, the main
one alone writes and prints the run files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPE = {
    "name": "two-processes",
    "model": {"name_or_path": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                               "intermediate_size": 64}},
    "task": {"name": "arithmetic", "difficulty": 2, "options": {"ops": ["+"]}},
    "template": "plain",
    "stages": [
        {"type": "sft", "name": "cold", "dataset_from": "generator", "steps": 2, "num_examples": 16, "batch_size": 4},
        {"type": "grpo", "name": "grpo", "steps": 2, "prompts_per_step": 2, "num_generations": 2,
         "max_new_tokens": 12, "report_to": "none", "sample_every": 0},
        {"type": "eval", "name": "ev", "num_problems": 4, "num_generations": 2, "max_new_tokens": 12},
    ],
}


@pytest.mark.slow
def test_two_cpu_processes_run_the_recipe_and_write_once(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(ROOT / "recipes" / "accelerate" / "cpu2.yaml"), "-m", "rlvr", "run", str(recipe),
         "--output-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=500)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("[rlvr run] summary:") == 1
    assert result.stdout.count("[rlvr run] stage 1 grpo (grpo)") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and set(summary["accuracy_per_stage"]) == {"ev"}
    assert (out / "1-grpo" / "model" / "model.safetensors").is_file()
