"""Every command of README's "Other commands" runs as written (on a tiny model, with smaller sizes
appended: argparse keeps the last value), so the README cannot drift from the CLI."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from rlvr.cli import main as rlvr_main

ROOT = Path(__file__).resolve().parents[1]
SMALLER = {  # appended to each command: the options it already has, at test sizes
    "verify": [],
    "eval": ["--num-problems", "2", "--num-generations", "2", "--draws", "2", "--max-new-tokens", "12"],
    "train-rm": ["--num-problems", "2", "--num-generations", "2", "--rollouts-per-step", "1",
                 "--epochs", "1", "--max-new-tokens", "12"],
    "search": ["--difficulty", "2", "--num-problems", "1", "--ns", "1,2", "--max-new-tokens", "12",
               "--max-step-tokens", "6", "--set", "mcts.simulations=2", "--set", "adaptive.token_budget=48"],
    "generate": ["--max-new-tokens", "12", "--max-step-tokens", "6"],
}


def readme_commands() -> list[str]:
    """The shell lines of the README's "Other commands" block: continuations joined, comments cut."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Other commands\n\n```bash\n(.+?)\n```", readme, re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    return [re.sub(r"\s+#.*$", "", line).strip() for line in lines if line.strip()]


def test_every_readme_command_runs(tmp_path, monkeypatch, capsys):
    from rlvr.models import ModelConfig, load_policy, save_policy

    monkeypatch.chdir(tmp_path)
    save_policy(load_policy(ModelConfig(name_or_path="tiny")), tmp_path / "model")
    Path("completions.jsonl").write_text(json.dumps({"completion": "<answer>4</answer>", "reference": "4"}) + "\n")
    env, ran = {}, []
    for line in readme_commands():
        if re.fullmatch(r"\w+=\S+", line):  # M=...: the model, here a tiny one
            name, _ = line.split("=", 1)
            env[name] = str(tmp_path / "model")
            continue
        argv = shlex.split(re.sub(r"\$(\w+)", lambda m: env[m.group(1)], line))
        assert argv[0] == "rlvr" and argv[1] in SMALLER, line
        assert rlvr_main(argv[1:] + SMALLER[argv[1]]) == 0, (line, capsys.readouterr().err[-2000:])
        ran.append(argv[1])
    assert sorted(set(ran)) == sorted(SMALLER)
    assert Path("rm/prm/reward_model.json").is_file() and Path("out/search/search.md").is_file()


@pytest.mark.parametrize("command", ["search", "generate", "train-rm", "eval"])
def test_readme_commands_give_the_template_task_and_separator(command):
    lines = [line for line in readme_commands() if line.startswith(f"rlvr {command} ")]
    assert lines
    for line in lines:
        assert "--template plain" in line
        if command != "generate":
            assert "--task-options" in line
        if command != "eval":
            assert "--step-separator ','" in line
