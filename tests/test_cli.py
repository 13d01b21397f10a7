"""The `rlvr` command: every subcommand is reachable and documents itself."""
import subprocess
import sys

import pytest

from rlvr.cli import SUBCOMMANDS, build_parser


def test_top_level_help_lists_every_subcommand():
    text = build_parser().format_help()
    for name in SUBCOMMANDS:
        assert name in text


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommand_has_help(name, capsys):
    from rlvr.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert f"rlvr {name}" in capsys.readouterr().out


def test_python_dash_m_rlvr_runs_the_cli():
    # what `accelerate launch -m rlvr run RECIPE.yaml` executes
    done = subprocess.run([sys.executable, "-m", "rlvr", "verify", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "--kind" in done.stdout


def test_unknown_subcommand_is_an_error():
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["trian"])
    assert exit_info.value.code == 2
