"""On 2 GPUs (device machine; `-m gpu`): the tiny recipe of test_two_process_cpu under every shipped
accelerate config (DDP, ZeRO-2, ZeRO-3, FSDP2). Each run finishes with every stage, replicated
engines keep both processes' parameters identical, and (sharded-state engines) `--resume auto`
after losing the last checkpoint ends near the uninterrupted result (GPU kernels are not bitwise deterministic, so:
closer to it than the checkpoint it resumed from was)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from test_two_process_cpu import RECIPE, ROOT, _digests, _free_port  # noqa: E402

# GRPO and eval only: the SFT stage runs on TRL's trainer, outside what these engines checks cover
GPU_RECIPE = {**RECIPE, "stages": [s for s in RECIPE["stages"] if s["type"] != "sft"]}

ENGINES = ["fsdp2", "zero3", "zero2", "ddp"]  # the ones CPU CI cannot check first
REPLICATED = {"ddp", "zero2"}

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")]


def _launch(engine: str, recipe: Path, out: Path, digests: Path, *extra: str) -> None:
    config = ROOT / "recipes" / "accelerate" / f"{engine}.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2",
           "--main_process_port", str(_free_port()), "-m", "rlvr", "run", str(recipe),
           "--output-dir", str(out), *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "RLVR_PARAM_DIGEST_DIR": str(digests), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, f"{engine}: " + proc.stdout[-2000:] + proc.stderr[-5000:]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update({k: v.float() for k, v in load_file(str(f)).items()})
    return out


def _distance(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())[:5]
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("engine", ENGINES)
def test_engine_runs_the_recipe_and_resumes(engine, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(GPU_RECIPE))
    out, digests = tmp_path / "run", tmp_path / "digests"
    _launch(engine, recipe, out, digests)

    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["grpo", "eval"]
    if engine in REPLICATED:
        d = _digests(digests)
        assert d["0-grpo-rank-0"] == d["0-grpo-rank-1"], f"{engine}: processes diverged"
    final = _weights(out / "0-grpo" / "model")
    at_step2 = _weights(out / "0-grpo" / "checkpoints" / "step-00000002" / "model")
    assert _distance(final, at_step2) > 0, "training did not move the parameters"

    if engine == "ddp":
        return  # DDP's resume is checked bit for bit on CPU (test_two_process_cpu)
    shutil.rmtree(out / "0-grpo" / "checkpoints" / "step-00000004")
    shutil.rmtree(out / "0-grpo" / "model")
    (out / "0-grpo" / "DONE.json").unlink()
    shutil.rmtree(out / "1-eval")
    _launch(engine, recipe, out, digests, "--resume", "auto")
    resumed = _weights(out / "0-grpo" / "model")
    gap, step = _distance(resumed, final), _distance(at_step2, final)
    print(f"{engine}: |resumed - uninterrupted| = {gap:.3g}, |step2 - uninterrupted| = {step:.3g}")
    assert gap < step, f"{engine}: the resumed run did not continue from the step-2 state"
