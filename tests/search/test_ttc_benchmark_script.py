"""The script that makes the test-time compute table on a GPU, run end to end on a tiny policy:
both phases, every method, the records it promises. A device call is too dear to find a broken
argument there."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ttc_smollm2.py"


@pytest.fixture(scope="module")
def ttc():
    spec = importlib.util.spec_from_file_location("ttc_smollm2", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_phases_write_the_table_records_and_reward_models(ttc, tmp_path):
    common = ["--policy", "tiny", "--work", str(tmp_path / "work"), "--template", "r1", "--levels", "1,2",
              "--max-new-tokens", "16", "--max-step-tokens", "8", "--device", "cpu"]
    assert ttc.main(["rm", *common, "--train-problems", "3", "--num-generations", "2", "--rollouts-per-step", "2",
                     "--rm-batch", "4", "--rm-epochs", "1", "--rm-pairwise", "1", "--orm-problems", "2",
                     "--orm-generations", "3", "--orm-variants", "prm_set,0.5,1,1_mixed"]) == 0
    facts = json.loads((tmp_path / "work" / "rm_facts.json").read_text())
    assert set(facts["models"]) == {"orm", "prm_hard", "prm_soft"}
    study = facts["orm_study"]
    assert list(study) == ["prm_set", "0.5", "1", "1_mixed"] and facts["orm_extra_solutions"] == 2 * 2 * 3
    assert study["0.5"]["problems"] < study["1"]["problems"]  # nested fractions of the same problems
    assert facts["models"]["orm"]["variant"] in study and facts["validation_solutions"] > 0
    for info in study.values():
        assert info.get("skipped") or ("train_auc" in info and "val_loss" in info)
    for name in ("prm_hard", "prm_soft"):  # how far to trust each AUC, and whether scores vary within a problem
        info = facts["models"][name]
        assert set(info["val_auc_90"]) == set(info["val_score_spread"]) == {"last", "min", "prod", "mean"}
        for agg, interval in info["val_auc_90"].items():
            assert interval is None or interval[0] <= info["val_auc"][agg] <= interval[1]
            assert set(info["val_score_spread"][agg]) == {"within", "between"}
    assert facts["prm_choice"]["model"] in ("prm_hard", "prm_soft")
    for name in facts["models"]:
        assert (tmp_path / "work" / name / "reward_model.json").is_file()
    out = tmp_path / "out"
    assert ttc.main(["search", *common, "--out", str(out), "--num-problems", "2", "--ns", "1,2", "--live-ns", "2",
                     "--live", "beam_search,dvts,mcts,adaptive,adaptive_policy"]) == 0
    record = json.loads((out / "ttc.json").read_text())
    methods = {p["method"] for p in record["points"]}
    assert {"majority_vote", "best_of_n (ORM)", "best_of_n (PRM)", "weighted_vote (PRM)", "beam_search (PRM)",
            "dvts (PRM)", "mcts (PRM)", "adaptive (PRM conf.)", "adaptive (policy conf.)",
            "pass@N (coverage bound)"} <= methods
    assert set(record["adaptive_thresholds"]) == {"prm", "confidence"}
    agreement = record["vote_scorer_agreement"]
    assert agreement["n"] == 2 and set(agreement["shares"]) == {"orm", "prm", "confidence"}
    for by_level in agreement["shares"].values():  # every level and all of them; the four shares make a whole
        assert set(by_level) == {"all", "1", "2"}
        assert all(abs(sum(shares.values()) - 1.0) < 1e-9 for shares in by_level.values())
    assert {p["difficulty"] for p in record["points"]} == {None, 1, 2}
    assert record["skipped"] == [] and set(record["auc"]) == {"orm", "prm", "confidence", "shorter"}
    assert set(record["auc_90"]) == set(record["score_spread"]) == {"orm", "prm", "confidence"}
    assert "best_of_n (policy confidence)" in methods
    assert "score spread within / between problems" in (out / "ttc.md").read_text()
    assert len(record["compute_optimal"]["levels"]) == 2
    reference = record["compute_optimal"]["reference"]  # the strongest pool selector at the largest N
    assert reference.endswith(" N=2") and reference.rsplit(" N=", 1)[0] in methods and "pass@" not in reference
    pools = json.loads((out / "pools.json").read_text())
    assert len(pools) == 4 and all(len(p["correct"]) == 2 and set(p["scores"]) == {"orm", "prm", "confidence"} for p in pools)
    for name in ("ttc.md", "accuracy_vs_n.png", "accuracy_vs_tokens.png"):
        assert (out / name).stat().st_size > 0


def test_the_deadline_forecast_scales_a_methods_last_time_by_n(ttc):
    seconds = {"mcts (PRM) N=4": 14.0, "mcts (PRM) N=16": 42.0, "beam_search (PRM) N=4": 15.0}
    assert ttc.forecast_seconds(seconds, "mcts (PRM)", 64) == 42.0 * 4  # from the largest smaller budget
    assert ttc.forecast_seconds(seconds, "beam_search (PRM)", 16) == 60.0
    assert ttc.forecast_seconds(seconds, "dvts (PRM)", 16) == 0.0  # never ran: no forecast
    assert ttc.forecast_seconds(seconds, "mcts (PRM)", 4) == 0.0
