"""`accelerate launch --config_file recipes/accelerate/cpu2.yaml -m rlvr run RECIPE` with two CPU
processes (gloo), RECIPE = cold-start SFT -> GRPO -> eval: the recipe finishes, every stage is in
summary.json, both processes hold the same parameters at every GRPO save, and `--resume auto` after
losing the last checkpoint ends with exactly the parameters of the uninterrupted run."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CPU2 = ROOT / "recipes" / "accelerate" / "cpu2.yaml"

# A tiny model and a length-dependent penalty (DAPO overlong) so that groups have reward variance
# and the updates move the parameters even though the model never solves a problem.
RECIPE = {
    "name": "two-process",
    "seed": 0,
    "model": {"name_or_path": "tiny",
              "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}},
    "task": {"name": "arithmetic", "difficulty": 1, "options": {"ops": ["+"]}},
    "template": "plain",
    "stages": [
        {"type": "sft", "name": "cold", "dataset_from": "generator", "steps": 2, "num_examples": 16,
         "batch_size": 4, "logging_steps": 1},
        {"type": "grpo", "name": "grpo", "steps": 4, "prompts_per_step": 4, "num_generations": 2,
         "max_new_tokens": 8, "micro_batch_size": 2, "learning_rate": 3.0e-3, "save_every": 2,
         "keep_last": 0, "report_to": "none", "sample_every": 0,
         "reward": {"overlong_max_length": 8, "overlong_cache": 6}},
        {"type": "eval", "name": "eval", "num_problems": 4, "num_generations": 2, "max_new_tokens": 8},
    ],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(recipe: Path, out: Path, digests: Path, *extra: str, processes: int = 2) -> subprocess.CompletedProcess:
    """`accelerate launch` with two CPU processes, or a plain `python -m rlvr run` for one."""
    launch = ([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU2),
               "--main_process_port", str(_free_port())] if processes == 2 else [sys.executable])
    cmd = [*launch, "-m", "rlvr", "run", str(recipe), "--output-dir", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path]), "RLVR_PARAM_DIGEST_DIR": str(digests)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=500, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _lose_the_end(out: Path, digests: Path) -> None:
    """As if killed after the step-2 checkpoint: the step-4 checkpoint, the stage's result and the eval are gone."""
    shutil.rmtree(out / "1-grpo" / "checkpoints" / "step-00000004")
    shutil.rmtree(out / "1-grpo" / "model")
    (out / "1-grpo" / "DONE.json").unlink()
    shutil.rmtree(out / "2-eval")
    shutil.rmtree(digests)


def _digests(folder: Path) -> dict[str, str]:
    return {p.stem: p.read_text() for p in folder.glob("*.sha256")}


@pytest.mark.slow
def test_two_cpu_processes_run_a_recipe_in_sync_and_resume_exactly(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    out, digests = tmp_path / "run", tmp_path / "digests"
    _launch(recipe, out, digests)

    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["cold", "grpo", "eval"]
    assert "accuracy" in summary["stages"][2]["metrics"]
    steps = [json.loads(line)["step"] for line in (out / "1-grpo" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # one line per step: only the main process writes

    first = _digests(digests)
    # every save (checkpoints of steps 2 and 4, the final model) by both processes, all in sync
    assert set(first) == {f"{owner}-rank-{r}" for owner in ("step-00000002", "step-00000004", "1-grpo")
                          for r in (0, 1)}
    for owner in ("step-00000002", "step-00000004", "1-grpo"):
        assert first[f"{owner}-rank-0"] == first[f"{owner}-rank-1"], f"{owner}: processes diverged"
    assert first["step-00000002-rank-0"] != first["1-grpo-rank-0"], "training did not move the parameters"

    # --resume auto skips the SFT and redoes steps 3-4 from step 2 on both processes.
    cold_done = (out / "0-cold" / "DONE.json").read_text()
    _lose_the_end(out, digests)
    _launch(recipe, out, digests, "--resume", "auto")

    resumed = _digests(digests)
    assert "step-00000002-rank-0" not in resumed  # steps 1-2 were not redone
    for r in (0, 1):
        assert resumed[f"1-grpo-rank-{r}"] == first[f"1-grpo-rank-{r}"], f"rank {r}: resume changed the result"
    assert (out / "0-cold" / "DONE.json").read_text() == cold_done  # not re-run
    assert json.loads((out / "summary.json").read_text())["stages"][2]["name"] == "eval"

    # DDP allows resuming on another process count: one process picks up the two-process checkpoint
    # of step 2 (full state), warns that its RNG streams are reseeded, and finishes the recipe.
    _lose_the_end(out, digests)
    proc = _launch(recipe, out, digests, "--resume", "auto", processes=1)
    assert "written by 2 processes, now 1" in proc.stderr
    single = _digests(digests)
    assert set(single) == {"step-00000004-rank-0", "1-grpo-rank-0"}  # steps 1-2 not redone
    assert single["1-grpo-rank-0"] != first["step-00000002-rank-0"], "the resumed steps did not train"
    assert json.loads((out / "summary.json").read_text())["stages"][2]["name"] == "eval"


@pytest.mark.slow
@pytest.mark.parametrize("precision,saved", [("bf16-mixed", "torch.float32"), ("bf16-kahan", "torch.bfloat16")])
def test_two_cpu_processes_train_bf16_mixed_with_float32_masters(tmp_path, precision, saved):
    """DDP under bf16-mixed (CPU autocast computes in bf16 there too) and under bf16-kahan: the SFT and
    GRPO stages run, both processes hold the same weights at every save (float32 masters, or bfloat16
    weights whose KahanAdamW steps agree), and the saved model has the precision's weight dtype."""
    from safetensors import safe_open

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "model": {**RECIPE["model"], "precision": precision}}))
    out, digests = tmp_path / "run", tmp_path / "digests"
    _launch(recipe, out, digests)
    found = _digests(digests)
    for owner in ("step-00000002", "step-00000004", "1-grpo"):
        assert found[f"{owner}-rank-0"] == found[f"{owner}-rank-1"], f"{owner}: processes diverged"
    assert found["step-00000002-rank-0"] != found["1-grpo-rank-0"], "training did not move the parameters"
    with safe_open(str(out / "1-grpo" / "model" / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {saved}


@pytest.mark.slow
def test_two_cpu_processes_stay_in_sync_under_a_token_budget(tmp_path):
    """GRPO with `micro_batch_tokens` under DDP: each process groups its own rows by length, both run
    the larger count of micro-batches, and their parameters agree at every save."""
    grpo = {k: v for k, v in RECIPE["stages"][1].items() if k != "micro_batch_size"}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "stages": [RECIPE["stages"][0], {**grpo, "micro_batch_tokens": 30}]}))
    out, digests = tmp_path / "run", tmp_path / "digests"
    _launch(recipe, out, digests)
    found = _digests(digests)
    for owner in ("step-00000002", "step-00000004", "1-grpo"):
        assert found[f"{owner}-rank-0"] == found[f"{owner}-rank-1"], f"{owner}: processes diverged"
    rows = [json.loads(line) for line in (out / "1-grpo" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["update/micro_batches"] >= 2 for r in rows), [r["update/micro_batches"] for r in rows]
