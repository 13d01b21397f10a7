"""Checkpoints: a run stopped after step k and resumed equals, bit for bit on the CPU, a run that
was never stopped; a process killed while writing a checkpoint loses only that checkpoint; a
damaged checkpoint is skipped for the previous one."""
import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlvr.trainer import checkpoint, run_grpo
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
    with pytest.raises(Stop):  # in the 4th step's rollouts: steps 1-3 done, checkpoint of step 2 on disk
        run_grpo(tiny_policy(), SevensTask(), resume_config(), tmp_path, reward_fn=reward_stopping_at(4))
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


def test_bf16_kahan_run_stopped_and_resumed_equals_the_uninterrupted_one(tmp_path):
    """bf16-kahan: bfloat16 weights and KahanAdamW's compensation and float32 moments come back exactly."""
    def kahan_policy():
        policy = tiny_policy()
        policy.precision = "bf16-kahan"
        policy.model.to(torch.bfloat16)
        return policy

    run_grpo(kahan_policy(), SevensTask(), resume_config(), tmp_path / "whole")
    with pytest.raises(Stop):
        run_grpo(kahan_policy(), SevensTask(), resume_config(), tmp_path / "stopped", reward_fn=reward_stopping_at(4))
    run_grpo(kahan_policy(), SevensTask(), resume_config(), tmp_path / "stopped", resume="auto")
    whole, resumed = final_params(tmp_path / "whole"), final_params(tmp_path / "stopped")
    assert all(t.dtype == torch.bfloat16 for t in whole.values())
    assert_bitwise_equal(resumed, whole)


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


# ----------------------------------------------------------------------------- damaged checkpoints

def reward_stopping_at(n: int):
    """A reward function that raises Stop in the n-th step's rollouts (steps 1..n-1 done)."""
    calls = {"n": 0}

    def reward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise Stop
        from rlvr.rewards import compute_rewards
        return compute_rewards(*args, **kwargs)
    return reward


@pytest.fixture(scope="module")
def stopped_after_4(tmp_path_factory):
    """A run stopped in step 5: checkpoints of steps 2 and 4 on disk."""
    out = tmp_path_factory.mktemp("stopped")
    with pytest.raises(Stop):
        run_grpo(tiny_policy(), SevensTask(), resume_config(), out, reward_fn=reward_stopping_at(5))
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [2, 4]
    return out


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_and_rewrite_manifest(ckpt: Path) -> None:
    """Damaged content the manifest agrees with: only reading it can tell."""
    (ckpt / "task.pt").write_bytes(b"\0" * (ckpt / "task.pt").stat().st_size)
    checkpoint.write_manifest(ckpt)


def make_legacy_and_truncate(ckpt: Path) -> None:
    """A checkpoint from before manifests, with a truncated file."""
    (ckpt / "manifest.json").unlink()
    state = json.loads((ckpt / "trainer_state.json").read_text())
    del state["manifest"]
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    truncate(ckpt / "trainable.safetensors")


DAMAGE = {
    "truncated safetensors": (lambda c: truncate(c / "trainable.safetensors"), "trainable.safetensors is"),
    "truncated rng": (lambda c: truncate(c / "rng" / "rank-0.pt"), "rng/rank-0.pt is"),
    "empty trainer_state": (lambda c: (c / "trainer_state.json").write_text(""), "trainer_state.json is 0 bytes"),
    "flipped byte": (lambda c: flip_middle_byte(c / "optimizer.pt"), "optimizer.pt does not match its sha256"),
    "missing manifest": (lambda c: (c / "manifest.json").unlink(), "manifest.json is missing"),
    "content the manifest matches": (damage_and_rewrite_manifest, "does not read back"),
    "legacy, truncated": (make_legacy_and_truncate, "does not read back"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_the_previous(damage, stopped_after_4, uninterrupted, tmp_path):
    shutil.copytree(stopped_after_4, tmp_path, dirs_exist_ok=True)
    newest = tmp_path / "checkpoints" / "step-00000004"
    apply, reason = DAMAGE[damage]
    apply(newest)
    with pytest.warns(UserWarning, match=rf"skipping .*step-00000004: .*{re.escape(reason)}") as caught:
        result = run_grpo(tiny_policy(seed=5), SevensTask(), resume_config(), tmp_path, resume="auto")
    skipped = [str(w.message) for w in caught if "skipping" in str(w.message)]
    assert len(skipped) == 1 and "\n" not in skipped[0]
    assert result["step"] == 6
    assert_bitwise_equal(final_params(tmp_path), final_params(uninterrupted))


def test_checkpoint_without_manifest_from_older_versions_is_accepted(stopped_after_4):
    ckpt = stopped_after_4 / "checkpoints" / "step-00000004"
    manifest = json.loads((ckpt / "manifest.json").read_text())["files"]
    assert {"trainable.safetensors", "optimizer.pt", "rng/rank-0.pt", "trainer_state.json",
            "model/config.json"} <= set(manifest)
    assert all(e["size"] > 0 and len(e["sha256"]) == 64 for e in manifest.values())
    legacy = stopped_after_4.parent / "legacy"
    shutil.copytree(ckpt, legacy)
    (legacy / "manifest.json").unlink()
    state = json.loads((legacy / "trainer_state.json").read_text())
    del state["manifest"]
    (legacy / "trainer_state.json").write_text(json.dumps(state))
    assert checkpoint.check(legacy) is None
    (legacy / "trainer_state.json").write_text(json.dumps({**state, "manifest": True}))
    assert checkpoint.check(legacy) == "manifest.json is missing"


def test_damaged_explicit_checkpoint_is_an_error(stopped_after_4, tmp_path):
    shutil.copytree(stopped_after_4 / "checkpoints" / "step-00000004", tmp_path / "c")
    truncate(tmp_path / "c" / "task.pt")
    with pytest.raises(ValueError, match="damaged: task.pt is"):
        resolve_resume(tmp_path / "c", tmp_path)


# ----------------------------------------------------------------------------- a full disk

def full_disk_in(monkeypatch, which: str, step: int) -> None:
    """Make writing `which` of checkpoint `step` fail the way a full disk does."""
    if which == "safetensors":
        real = checkpoint.save_file

        def save_file(tensors, filename, *args, **kwargs):
            if f"step-{step:08d}" in str(filename):
                raise OSError(errno.ENOSPC, "No space left on device", filename)
            return real(tensors, filename, *args, **kwargs)
        monkeypatch.setattr(checkpoint, "save_file", save_file)
    else:
        real_save = torch.save

        def torch_save(obj, f, *args, **kwargs):
            if f"step-{step:08d}" in str(f) and str(f).endswith("scheduler.pt"):
                raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed "
                                   "writing file data/0: file write failed")
            return real_save(obj, f, *args, **kwargs)
        monkeypatch.setattr(torch, "save", torch_save)


@pytest.mark.parametrize("which", ["safetensors", "torch.save"])
def test_full_disk_while_saving_keeps_the_last_good_checkpoint(which, monkeypatch, tmp_path):
    leftover = tmp_path / "checkpoints" / ".tmp-step-00000099"
    (leftover / "rng").mkdir(parents=True)  # a killed save of an earlier run
    full_disk_in(monkeypatch, which, 4)
    with pytest.raises(checkpoint.CheckpointDiskFullError,
                       match=r"no space left on device while writing .*\.tmp-step-00000004"):
        run_grpo(tiny_policy(), SevensTask(), resume_config(), tmp_path)
    root = tmp_path / "checkpoints"
    assert not leftover.exists()  # removed when the run started
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002"]  # no partial folder
    assert checkpoint.check(root / "step-00000002") is None
