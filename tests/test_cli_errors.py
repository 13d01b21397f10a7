"""Every user error of the `rlvr` command is one line on stderr with exit status 2; --debug shows
the traceback."""
from __future__ import annotations

import pytest
import yaml

from rlvr.cli import main as rlvr_main


def _one_line_error(capsys, argv) -> str:
    assert rlvr_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_search_without_reward_models_names_the_option_before_loading_anything(capsys):
    err = _one_line_error(capsys, ["search", "--model", "/no/such/model", "--methods", "majority_vote,beam_search"])
    assert "beam_search scores with 'prm'" in err and "--prm DIR" in err and "rlvr train-rm" in err


def test_missing_model_folder_is_named(capsys):
    err = _one_line_error(capsys, ["eval", "--model", "/missing/dir", "--num-problems", "2"])
    assert err == "rlvr eval: --model /missing/dir: no such folder"


def test_missing_reward_model_points_to_rlvr_train_rm(capsys, tmp_path):
    err = _one_line_error(capsys, ["generate", "--model", "tiny", "--prompt", "1+1=?", "--method", "best_of_n",
                                   "--orm", str(tmp_path / "orm")])
    assert "is not a reward model" in err and "rlvr train-rm" in err and "python -m" not in err


def test_the_old_samples_flag_names_the_new_one(capsys):
    err = _one_line_error(capsys, ["eval", "--model", "/missing/dir", "--n", "4"])
    assert err == "rlvr eval: --n was renamed: use --num-generations (samples per problem, the name recipes use)"


def test_bad_task_options_are_one_line(capsys):
    err = _one_line_error(capsys, ["eval", "--model", "tiny", "--task", "arithmetic", "--task-options",
                                   "{ops: ['^']}", "--num-problems", "1", "--num-generations", "1"])
    assert err.startswith("rlvr eval: --task arithmetic:")


def test_debug_shows_the_traceback(capsys):
    from rlvr.search.base import SearchError

    with pytest.raises(SearchError):
        rlvr_main(["eval", "--model", "/missing/dir", "--debug"])


def test_generate_runs_with_its_default_method(capsys):
    argv = ["generate", "--model", "tiny", "--prompt", "1+1=?", "--template", "plain", "--max-new-tokens", "8",
            "--set", "num_generations=2", "--threads", "1"]
    assert rlvr_main(argv) == 0, capsys.readouterr().err
    assert "answer:" in capsys.readouterr().out


def test_rejection_sampling_that_keeps_nothing_says_what_to_change(tmp_path, capsys):
    recipe = {
        "name": "weak", "template": "plain",
        "model": {"name_or_path": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                                   "intermediate_size": 64}},
        "task": {"name": "arithmetic", "difficulty": 2, "options": {"ops": ["+"]}},
        "stages": [  # an untrained model: no sample is correct
            {"type": "rejection_sampling", "name": "rs", "num_problems": 2, "num_generations": 1,
             "max_new_tokens": 4},
            {"type": "sft", "name": "rs-sft", "dataset_from": "rs", "steps": 1},
        ],
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    for resume in ([], ["--resume", "auto"]):  # a resume meets the same one line, not a traceback
        err = _one_line_error(capsys, ["run", str(path), "--output-dir", str(out), *resume])
        assert "stage 0 rs: rejection sampling kept no correct completion" in err, err
        assert "stages.0.num_generations" in err and "--rerun-changed" in err
    assert not (out / "0-rs" / "DONE.json").exists() and not (out / ".lock").exists()


def test_the_old_reward_model_samples_flag_names_the_new_one(capsys):
    err = _one_line_error(capsys, ["train-rm", "--model", "/missing/dir", "--output-dir", "x",
                                   "--samples-per-problem", "4"])
    assert err == ("rlvr train-rm: --samples-per-problem was renamed: use --num-generations (samples per "
                   "problem, the name recipes use)")


@pytest.mark.parametrize("argv", [
    ["generate", "--model", "tiny", "--prompt", "1+1=?", "--method", "best_of_n", "--set", "n=2"],
    ["search", "--model", "tiny", "--methods", "majority_vote,weighted_vote", "--set", "weighted_vote.n=2"],
])
def test_the_old_search_samples_key_names_the_new_one(capsys, argv):
    err = _one_line_error(capsys, argv)
    assert ".n: renamed to num_generations (samples per problem" in err, err
