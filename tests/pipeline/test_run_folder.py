"""A run folder has one owner, and `--resume auto` skips a stage only when it ran with the same
settings; `recipe.yaml` always says what ran."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlvr.config import ConfigError
from rlvr.pipeline import lock
from rlvr.pipeline.recipe import parse_recipe
from rlvr.pipeline.runner import run_recipe

ROOT = Path(__file__).resolve().parents[2]
TINY = {"name_or_path": "tiny",
        "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}}
RECIPE = {
    "name": "folder",
    "model": TINY,
    "task": {"name": "arithmetic", "difficulty": 1, "options": {"ops": ["+"]}},
    "template": "plain",
    "stages": [
        {"type": "eval", "name": "first", "num_problems": 4, "num_generations": 0, "max_new_tokens": 4},
        {"type": "eval", "name": "second", "num_problems": 3, "num_generations": 0, "max_new_tokens": 4},
    ],
}


def _recipe(**second):
    data = json.loads(json.dumps(RECIPE))
    data["stages"][0].update(second)
    return parse_recipe(data)


def _write_lock(out: Path, pid: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / lock.LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                                  "started": "2026-01-01T00:00:00"}))


def test_a_second_live_run_is_refused_naming_the_folder_and_owner(tmp_path):
    out = tmp_path / "run"
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_recipe(_recipe(), out)
        _write_lock(out, owner.pid)  # another process runs in the folder
        for resume in (True, False):
            with pytest.raises(lock.RunLocked, match=rf"{out}.*process {owner.pid}"):
                run_recipe(_recipe(), out, resume=resume)
        # the CLI: one line, rc 2, no traceback
        recipe_file = tmp_path / "r.yaml"
        recipe_file.write_text(yaml.safe_dump(RECIPE))
        done = subprocess.run([sys.executable, "-m", "rlvr", "run", str(recipe_file), "--output-dir", str(out),
                               "--resume", "auto"], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 2
        assert done.stderr.strip().count("\n") == 0 and str(owner.pid) in done.stderr, done.stderr
    finally:
        owner.kill()
        owner.wait()


def test_a_stale_lock_is_taken_over_and_the_lock_is_released_at_the_end(tmp_path, capsys):
    out = tmp_path / "run"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(out, dead.pid)  # a run killed with SIGKILL leaves its lock behind
    run_recipe(_recipe(), out)
    assert "taking over the stale lock" in capsys.readouterr().err
    assert not (out / lock.LOCK_FILE).exists()
    assert json.loads((out / "summary.json").read_text())["finished"]


def test_resume_refuses_a_stage_that_ran_with_other_settings(tmp_path):
    out = tmp_path / "run"
    run_recipe(_recipe(), out)
    ran = (out / "recipe.yaml").read_text()
    done = (out / "0-first" / "DONE.json").read_text()

    with pytest.raises(ConfigError, match=r"stage 0 first .*stages\.0\.num_problems: 4 -> 8.*--rerun-changed"):
        run_recipe(_recipe(num_problems=8), out, resume=True)
    assert (out / "recipe.yaml").read_text() == ran  # still says what ran
    assert (out / "0-first" / "DONE.json").read_text() == done

    # the same settings: skipped, nothing re-run
    run_recipe(_recipe(), out, resume=True)
    assert (out / "0-first" / "DONE.json").read_text() == done

    # --rerun-changed: the changed stage and every stage after it run again with the new settings
    summary = run_recipe(_recipe(num_problems=8), out, resume=True, rerun_changed=True)
    assert summary["finished"]
    assert json.loads((out / "0-first" / "DONE.json").read_text())["metrics"]["num_problems"] == 8
    assert yaml.safe_load((out / "recipe.yaml").read_text())["stages"][0]["num_problems"] == 8


def test_a_changed_instruction_is_a_changed_setting_of_every_stage(tmp_path):
    out = tmp_path / "run"
    run_recipe(parse_recipe({**RECIPE, "template": "r1"}), out)
    changed = parse_recipe({**RECIPE, "template": "r1", "instruction": "Be brief."})
    with pytest.raises(ConfigError, match=r"stage 0 first .*instruction: None -> Be brief\."):
        run_recipe(changed, out, resume=True)


def test_a_changed_input_stage_is_named_for_the_stages_that_read_it(tmp_path):
    data = json.loads(json.dumps(RECIPE))
    data["stages"] = [{"type": "sft", "name": "cold", "dataset_from": "generator", "steps": 1,
                       "num_examples": 4, "batch_size": 4}, data["stages"][0]]
    out = tmp_path / "run"
    run_recipe(parse_recipe(data), out)
    data["stages"][0]["steps"] = 2
    with pytest.raises(ConfigError, match=r"stage 0 cold .*stages\.0\.steps: 1 -> 2"):
        run_recipe(parse_recipe(data), out, resume=True)
    from rlvr.pipeline.runner import plan_resume

    # the eval reads cold's model: its own settings are unchanged but its input is not
    (out / "0-cold" / "FINGERPRINT.json").unlink()
    with pytest.raises(ConfigError, match=r"stage 1 first .*input model"):
        plan_resume(parse_recipe(data), out, rerun_changed=False)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def test_a_refused_run_leaves_the_folder_as_it_was(tmp_path):
    out = tmp_path / "run"
    run_recipe(_recipe(), out)
    owner = subprocess.Popen(["sleep", "30"])
    try:
        _write_lock(out, owner.pid)
        before = _snapshot(out)
        with pytest.raises(lock.RunLocked, match=rf"{out}.*process {owner.pid}"):
            run_recipe(_recipe(num_problems=8), out, resume=True, rerun_changed=True)
        assert _snapshot(out) == before  # not even recipe.yaml or a stage folder touched
    finally:
        owner.kill()
        owner.wait()

