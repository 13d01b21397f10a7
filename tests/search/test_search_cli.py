"""The command-line faces: train a PRM, `rlvr eval`, `rlvr search`, `rlvr generate` on a tiny policy."""
import argparse
import json

import pytest

pytestmark = pytest.mark.slow  # loads tiny policies and trains a PRM: about a minute on a shared CPU

from rlvr.cli import main as rlvr_main
from rlvr.registry import UnknownNameError

COMMON = ["--model", "tiny", "--task", "arithmetic", "--difficulty", "1", "--max-new-tokens", "12",
          "--max-step-tokens", "6", "--step-separator", "\\n"]


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory):
    from rlvr.reward_models.cli import add_arguments, main

    out = tmp_path_factory.mktemp("rm") / "prm"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(COMMON + ["--num-problems", "2", "--kind", "prm", "--num-generations", "2",
                                       "--rollouts-per-step", "2", "--epochs", "1", "--output-dir", str(out)])
    assert main(args) == 0
    facts = json.loads((out / "fit.json").read_text())
    assert facts["kind"] == "prm" and facts["records"] == 4
    return out


def test_search_cli_writes_table_and_plots(tmp_path, prm_dir, capsys):
    out = tmp_path / "search"
    code = rlvr_main(["search", *COMMON, "--num-problems", "2", "--prm", str(prm_dir),
                      "--methods", "majority_vote,best_of_n:prm,beam_search", "--set", "beam_search.max_steps=2",
                      "--ns", "1,2", "--output-dir", str(out)])
    assert code == 0
    table = (out / "search.md").read_text()
    for row in ("| majority_vote |", "| best_of_n:prm |", "| beam_search |"):
        assert row in table
    assert (out / "accuracy_vs_n.png").stat().st_size > 1000
    outcomes = [json.loads(line) for line in (out / "outcomes.jsonl").read_text().splitlines()]
    assert len(outcomes) == 3 * 2 * 2  # methods x N x problems
    assert all(o["tokens"] > 0 for o in outcomes)


def test_eval_cli_curves(tmp_path, prm_dir):
    out = tmp_path / "eval"
    code = rlvr_main(["eval", *COMMON, "--num-problems", "2", "--num-generations", "4", "--prm", str(prm_dir),
                      "--aggregation", "min", "--thinking-budgets", "2,4", "--output-dir", str(out)])
    assert code == 0
    points = json.loads((out / "points.json").read_text())
    methods = {p["method"] for p in points}
    assert {"pass@N", "majority", "best_of_n[prm]", "weighted_vote[prm]", "thinking"} <= methods
    assert sorted({p["n"] for p in points if p["method"] == "pass@N"}) == [1, 2, 4]
    assert (out / "accuracy_vs_tokens.png").exists()


def test_generate_cli_hides_thinking_unless_asked(prm_dir, capsys):
    args = ["generate", "--prompt", "2+3", "--method", "beam_search", "--set", "beam_width=1",
            "--set", "expansions=2", "--set", "max_steps=2", "--prm", str(prm_dir), *COMMON[:2], *COMMON[6:]]
    assert rlvr_main(args) == 0
    assert "answer:" in capsys.readouterr().out
    from rlvr.search.generate_cli import hide_thinking

    assert hide_thinking("<think>secret</think>42") == "42"
    assert hide_thinking("<think>cut off") == ""


def test_a_policy_directory_is_not_a_prm(tmp_path):
    from rlvr.models import ModelConfig, load_policy, save_policy
    from rlvr.reward_models import RewardModelError

    save_policy(load_policy(ModelConfig(name_or_path="tiny")), tmp_path / "policy")
    with pytest.raises(RewardModelError, match="is not a reward model: it has no reward_model.json"):
        rlvr_main(["generate", "--prompt", "1+1", "--prm", str(tmp_path / "policy"), "--debug"])


def test_search_cli_rejects_unknown_method_and_stray_options():
    from rlvr.search import SearchError

    with pytest.raises(UnknownNameError, match="unknown search method 'beam'"):
        rlvr_main(["search", "--methods", "beam", "--debug"])
    with pytest.raises(SearchError, match="--set for method\\(s\\) not being run: mcts"):
        rlvr_main(["search", "--methods", "best_of_n", "--set", "mcts.simulations=3", "--debug"])
    with pytest.raises(SearchError, match="majority_vote takes no scorer"):
        rlvr_main(["search", "--methods", "majority_vote:prm", "--debug"])
