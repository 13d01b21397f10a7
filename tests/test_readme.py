"""CI must run what the README tells a user to run."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _first_command_after(heading: str) -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split(heading, 1)[1]
    return re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()


def test_ci_runs_the_readme_install_and_test_commands():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _first_command_after("## Install") in ci
    assert _first_command_after("## Test") in ci


def test_readme_main_job_names_a_shipped_recipe():
    command = _first_command_after("## The main job")
    recipe = re.search(r"rlvr run (\S+)", command).group(1)
    assert (ROOT / recipe).is_file()
