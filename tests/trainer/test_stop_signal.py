"""SIGTERM/SIGINT during GRPO: the step finishes, a checkpoint is written, `rlvr run` exits with
128 + the signal number and one line, and `--resume auto` continues from that checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rlvr.trainer.checkpoint import check, list_checkpoints

RECIPE = {
    "name": "sigterm",
    "model": {"name_or_path": "tiny",
              "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}},
    "task": {"name": "arithmetic", "difficulty": 1, "options": {"ops": ["+"]}},
    "template": "plain",
    "stages": [{"type": "grpo", "name": "grpo", "steps": 40, "prompts_per_step": 2, "num_generations": 2,
                "max_new_tokens": 8, "learning_rate": 1e-4, "report_to": "none", "sample_every": 0}],
}


def rlvr_run(recipe: Path, out: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlvr", "run", str(recipe), "--output-dir", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def logged_steps(metrics: Path) -> list[int]:
    if not metrics.is_file():
        return []
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.endswith("}")]


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_checkpoint_and_resume_continues(signum, code, tmp_path):
    recipe, out = tmp_path / "recipe.yaml", tmp_path / "run"
    recipe.write_text(yaml.safe_dump(RECIPE))
    metrics = out / "0-grpo" / "metrics.jsonl"
    proc = rlvr_run(recipe, out)
    deadline = time.time() + 240
    while len(logged_steps(metrics)) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr
    assert stderr.count(f"rlvr run: stopped by {signal.Signals(signum).name} after step") == 1
    stopped_at = logged_steps(metrics)[-1]
    assert 3 <= stopped_at < 40
    root = out / "0-grpo" / "checkpoints"
    assert [s for s, _ in list_checkpoints(root)] == [stopped_at]  # save_every (50) not reached
    assert check(root / f"step-{stopped_at:08d}") is None
    assert f"checkpoint {root / f'step-{stopped_at:08d}'}" in stdout

    resumed = rlvr_run(recipe, out, "--resume", "auto")  # the same settings: a changed stage is refused
    stdout, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr[-2000:]
    assert logged_steps(metrics) == list(range(1, 41))  # continued, not restarted
    assert (out / "0-grpo" / "DONE.json").is_file()
