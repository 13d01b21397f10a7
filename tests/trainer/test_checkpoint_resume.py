"""Checkpoints: a run stopped after step k and resumed equals, bit for bit on the CPU, a run that
was never stopped; a process killed while writing a checkpoint loses only that checkpoint."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlvr.trainer import run_grpo
from rlvr.trainer.checkpoint import list_checkpoints, resolve_resume

from grpo_fixtures import SevensTask, resume_config, tiny_policy

HERE = Path(__file__).parent


def final_params(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / "step-00000006" / "trainable.safetensors"))


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    run_grpo(tiny_policy(), SevensTask(), resume_config(), out)
    return out


class Stop(Exception):
    pass


def test_stop_and_resume_is_bitwise_identical(uninterrupted, tmp_path):
    calls = {"n": 0}

    def reward_then_stop(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # the 4th step's rollouts: steps 1-3 done, checkpoint of step 2 on disk
            raise Stop
        from rlvr.rewards import compute_rewards
        return compute_rewards(*args, **kwargs)

    with pytest.raises(Stop):
        run_grpo(tiny_policy(), SevensTask(), resume_config(), tmp_path, reward_fn=reward_then_stop)
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [2]
    result = run_grpo(tiny_policy(seed=123), SevensTask(), resume_config(), tmp_path, resume="auto")
    assert result["step"] == 6
    assert_bitwise_equal(final_params(tmp_path), final_params(uninterrupted))
    # the interrupted step's metrics line is redone, not duplicated
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    # and the metrics of the resumed steps equal the uninterrupted run's
    ref = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    got = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(ref[3:], got[3:]):
        assert a["reward/mean"] == b["reward/mean"] and a["loss/total"] == b["loss/total"]


def test_kill_while_writing_checkpoint_then_resume(uninterrupted, tmp_path):
    proc = subprocess.run([sys.executable, str(HERE / "crash_during_save.py"), str(tmp_path), "4"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -9, proc.stderr[-2000:]
    root = tmp_path / "checkpoints"
    assert (root / ".tmp-step-00000004" / "trainable.safetensors").is_file()  # died mid-write
    assert not (root / ".tmp-step-00000004" / "trainer_state.json").exists()
    assert resolve_resume("auto", root) == root / "step-00000002"
    result = run_grpo(tiny_policy(seed=7), SevensTask(), resume_config(), tmp_path, resume="auto")
    assert result["step"] == 6
    assert_bitwise_equal(final_params(tmp_path), final_params(uninterrupted))
    assert not (root / ".tmp-step-00000004").exists()  # the leftover was replaced by a real save
    assert (root / "step-00000004" / "model" / "config.json").is_file()


def test_resume_from_explicit_path_and_missing_checkpoint_errors(uninterrupted, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        resolve_resume(tmp_path / "nope", tmp_path)
    assert resolve_resume("auto", tmp_path / "empty") is None
    assert resolve_resume(uninterrupted / "checkpoints" / "step-00000004", tmp_path).name == "step-00000004"


def test_keep_last_prunes_old_checkpoints(tmp_path):
    run_grpo(tiny_policy(), SevensTask(), resume_config(steps=3, save_every=1, keep_last=2,
                                                       num_iterations=1), tmp_path)
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [2, 3]
    state = json.loads((tmp_path / "checkpoints" / "step-00000003" / "trainer_state.json").read_text())
    assert state["step"] == 3 and "reward/mean" in state["metrics"]
