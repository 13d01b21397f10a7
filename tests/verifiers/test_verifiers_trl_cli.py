"""The TRL reward-function adapter (called as GRPOTrainer calls it) and the `rlvr verify` CLI."""
import json
import subprocess
import sys

import pytest

from verifiers import trl_reward_func, verify_batch
from verifiers.cli import summarize
from verifiers.result import VerifyResult


def test_trl_reward_func_with_plain_and_conversational_completions():
    reward = trl_reward_func("math", reference_column="answer")
    assert reward.__name__ == "math_reward"  # what TRL logs the reward under
    prompts = ["What is 1+1?", "What is 2+2?", "Half of one?"]
    plain = ["\\boxed{2}", "I think 5", "the answer is 0.5"]
    chat = [[{"role": "assistant", "content": text}] for text in plain]
    # TRL passes every dataset column plus its own extras as keyword arguments.
    extras = {"answer": ["2", "4", "\\frac{1}{2}"], "trainer_state": object(), "completion_ids": [[1], [2], [3]]}
    assert reward(prompts=prompts, completions=plain, **extras) == [1.0, 0.0, 1.0]
    assert reward(prompts=prompts, completions=chat, **extras) == [1.0, 0.0, 1.0]


def test_trl_reward_func_with_dict_references_and_options():
    reward = trl_reward_func("countdown", use_all_numbers=True)
    scores = reward(
        prompts=["p", "p"],
        completions=["<answer>3 * 5 + 1</answer>", "<answer>3 * 5</answer>"],
        reference=[{"numbers": [1, 3, 5], "target": 16}] * 2,
    )
    assert scores == [1.0, 0.0]


def test_trl_reward_func_names_a_missing_column_and_bad_options():
    reward = trl_reward_func("math", reference_column="solution")
    with pytest.raises(KeyError, match="'solution'.*columns given: \\['answer'\\]"):
        reward(prompts=["p"], completions=["1"], answer=["1"], trainer_state=None)
    with pytest.raises(TypeError, match="unknown option"):
        trl_reward_func("math", tolerance=0.1)


def _run_cli(*args, module=("-m", "verifiers")):
    return subprocess.run([sys.executable, *module, *args], capture_output=True, text=True, timeout=120)


def test_cli_prints_items_and_summary_and_writes_results(tmp_path):
    rows = [
        {"completion": "\\boxed{4}", "reference": "4"},  # correct (fast path)
        {"completion": "so \\boxed{\\sqrt{4}}", "reference": "2"},  # correct (math-verify)
        {"completion": "no idea", "reference": "3"},  # no answer
        {"completion": "\\boxed{5}", "reference": "4"},  # wrong
    ]
    source = tmp_path / "completions.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "results.jsonl"
    done = _run_cli("--kind", "math", "--input", str(source), "--output", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("0\t1.000\tcorrect") and lines[2].startswith("2\t0.000\tno answer found")
    summary = json.loads(done.stdout[done.stdout.index("\n{\n") :])
    assert summary == {
        "count": 4,
        "mean_score": 0.5,
        "accuracy": 0.5,
        "timeouts": 0,
        "reasons": {"correct": 2, "no answer found": 1, "wrong answer": 1},
    }
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["correct"] for w in written] == [True, True, False, False]


def test_rlvr_verify_is_the_same_command(tmp_path):
    source = tmp_path / "c.jsonl"
    source.write_text(json.dumps({"completion": "x = 3 / 4 = 0.75", "reference": "3/4"}) + "\n")
    done = _run_cli("verify", "--kind", "numeric", "--input", str(source), "--quiet", module=("-m", "rlvr"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accuracy"] == 1.0


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"completion": "1", "reference": "1"}\n{"completion": "2"}\n', "c.jsonl:2: missing field(s) ['reference']"),
        ('{"completion": "1", "reference": "1"}\nnot json\n', "c.jsonl:2: not valid JSON"),
    ],
)
def test_cli_names_the_bad_line(tmp_path, content, message):
    source = tmp_path / "c.jsonl"
    source.write_text(content)
    done = _run_cli("--kind", "math", "--input", str(source))
    assert done.returncode == 2 and message in done.stderr


def test_cli_options_and_unknown_kind(tmp_path):
    source = tmp_path / "c.jsonl"
    source.write_text(json.dumps({"completion": "the answer is 3.2", "reference": "3.14"}) + "\n")
    loose = _run_cli("--kind", "numeric", "--input", str(source), "--quiet", "--option", "abs_tol=0.1")
    assert json.loads(loose.stdout)["accuracy"] == 1.0
    unknown = _run_cli("--kind", "maths", "--input", str(source))
    assert unknown.returncode == 2 and "available kinds" in unknown.stderr


def test_summary_counts_reason_categories():
    results = [VerifyResult(0.5, False, "tests failed: 1/2 passed; test 1: x"), VerifyResult(1.0, True, "correct")]
    assert summarize(results) == {
        "count": 2,
        "mean_score": 0.75,
        "accuracy": 0.5,
        "timeouts": 0,
        "reasons": {"tests failed": 1, "correct": 1},
    }


def test_summary_counts_timeouts_apart_from_failed_tests():
    completions = [
        "def f():\n    import time\n    time.sleep(60)",  # one test past its time limit
        "def f():\n    return 1",  # a wrong answer
        "def f():\n    return 2",  # correct
    ]
    results = verify_batch("code", completions, [{"tests": ["assert f() == 2"]}] * 3, test_timeout_s=1.0, timeout_s=8)
    summary = summarize(results)
    assert summary["timeouts"] == 1, results
    assert summary["reasons"] == {"timeout": 1, "tests failed": 1, "correct": 1}
