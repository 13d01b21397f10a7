"""Dataset task sources from local files: presets, mappings, malformed rows, shuffling and resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import verifiers
from rlvr.tasks import DatasetRowError, load_dataset_task, make_task
from rlvr.tasks.dataset_source import gsm8k_answer, last_boxed

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GSM8K = {"train": str(FIXTURES / "gsm8k_train.jsonl"), "test": str(FIXTURES / "gsm8k_test.jsonl")}


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so $x=\boxed{4}$.", "4"),
        (r"$\boxed{\frac{3}{4}}$", r"\frac{3}{4}"),  # nested braces are kept whole
        (r"first \boxed{1}, finally \boxed{2, 3}", "2, 3"),  # the last box wins
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces count as braces too and stay balanced
        (r"\fbox{7}", "7"),
        ("no box here", None),
        (r"\boxed{\frac{1}{2}", None),  # unbalanced: no answer rather than a wrong one
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_gsm8k_answer_removes_commas():
    assert gsm8k_answer("so 1,200+300=1,500.\n#### 1,500") == "1500"
    assert gsm8k_answer("no marker") is None


def test_gsm8k_preset_reads_answers_solutions_and_test_split():
    source = load_dataset_task(GSM8K, preset="gsm8k", seed=0)
    train = source.sample(12)
    assert sorted(e.reference for e in train) == sorted(["8", "48", "60", "1500", "28", "9", "28", "150", "180",
                                                          "65", "1750", "32"])
    car = next(e for e in train if e.prompt.startswith("A car costs"))
    assert car.solution == "<think>The car costs 300+1200=1,500 dollars.</think><answer>1500</answer>"
    held = source.held_out(4)
    assert {e.reference for e in held} == {"15", "40", "1500"}
    assert all(e.meta["split"] == "test" for e in held)
    results = verifiers.verify_batch("math", [e.solution for e in train], [e.reference for e in train])
    assert all(r.correct for r in results)


def test_gsm8k_preset_on_real_gsm8k_rows():
    """Five rows of the published GSM8K train split (MIT; notice beside the fixture): the `#### n`
    line becomes the reference (thousands comma dropped, sign kept), the calculator annotations
    `<<48/2=24>>` leave the worked solution, and each worked solution verifies as correct."""
    real = str(FIXTURES / "gsm8k_real_rows.jsonl")
    source = load_dataset_task({"train": real, "test": real}, preset="gsm8k", seed=0)
    rows = source.held_out(5)
    assert sorted(e.reference for e in rows) == sorted(["72", "10", "5", "1080", "-7"])
    natalia = next(e for e in rows if e.prompt.startswith("Natalia"))
    assert natalia.solution == ("<think>Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips "
                                "altogether in April and May.</think><answer>72</answer>")
    assert not any("<<" in e.solution or "####" in e.solution for e in rows)
    assert all(r.correct for r in verifiers.verify_batch("math", [e.solution for e in rows],
                                                        [e.reference for e in rows]))


def test_math_preset_boxed_answers_and_levels():
    source = load_dataset_task(str(FIXTURES / "math_train.jsonl"), preset="math", held_out_fraction=0.0)
    assert source.difficulty == [1, 2, 3, 4]  # every level unless asked otherwise
    by_prompt = {e.prompt: e for e in source.sample(10)}
    assert by_prompt[r"What is $\frac{1}{2}+\frac{1}{4}$?"].reference == r"\frac{3}{4}"
    assert by_prompt["Find the roots of $x^2-5x+6=0$."].reference == "2, 3"
    assert by_prompt[r"What is the value of $\dbinom{5}{2}$?"].difficulty == 2
    source.set_difficulty(1)
    assert {e.difficulty for e in source.sample(8)} == {1}
    assert make_task("dataset", source=str(FIXTURES / "math_train.jsonl"), preset="math", difficulty=[2, 3],
                     held_out_fraction=0.0).num_train == 5
    with pytest.raises(ValueError, match=r"no rows at difficulty \[5\]; levels present: \[1, 2, 3, 4\]"):
        source.set_difficulty(5)


def test_csv_with_a_field_mapping_and_a_hold_out_fraction():
    source = make_task("dataset", seed=3, source=str(FIXTURES / "qa.csv"), mapping={"prompt": "q", "answer": "a"},
                       held_out_fraction=0.5)
    train = {e.prompt for e in source.sample(30)}
    held = source.held_out(source.num_held_out)
    assert train and held and train.isdisjoint({e.prompt for e in held})
    assert len(train) + len(held) == 6
    assert {e.reference for e in source.sample(6)} <= {"4", "7", "42", "81", "25"}


def test_parquet_written_here(tmp_path):
    import datasets

    path = tmp_path / "rows.parquet"
    datasets.Dataset.from_list([{"question": f"{i}+1=?", "answer": str(i + 1)} for i in range(20)]).to_parquet(str(path))
    source = load_dataset_task(str(path), held_out_fraction=0.2)
    drawn = source.sample(source.num_train)
    assert source.num_train + source.num_held_out == 20
    assert all(int(e.reference) == int(e.prompt.split("+")[0]) + 1 for e in drawn)


def test_no_difficulty_column_means_one_level():
    source = load_dataset_task(str(FIXTURES / "qa.csv"), mapping={"prompt": "q", "answer": "a"})
    with pytest.raises(ValueError, match="set mapping.difficulty"):
        source.set_difficulty(2)


def test_each_epoch_is_a_shuffled_pass_and_resume_is_exact():
    source = load_dataset_task(GSM8K, preset="gsm8k", seed=5)
    epoch1, epoch2 = source.sample(12), source.sample(12)
    assert sorted(e.id for e in epoch1) == sorted(e.id for e in epoch2)  # every row once per epoch
    assert [e.id for e in epoch1] != [e.id for e in epoch2]  # in a new order
    other_seed = load_dataset_task(GSM8K, preset="gsm8k", seed=6).sample(12)
    assert [e.id for e in other_seed] != [e.id for e in epoch1]

    source = load_dataset_task(GSM8K, preset="gsm8k", seed=5)
    batches = [source.sample(5) for _ in range(5)]
    replay = load_dataset_task(GSM8K, preset="gsm8k", seed=5)
    replay.sample(5), replay.sample(5)
    fresh = load_dataset_task(GSM8K, preset="gsm8k", seed=5)
    fresh.load_state_dict(replay.state_dict())
    assert [fresh.sample(5) for _ in range(3)] == batches[2:]


@pytest.mark.parametrize(
    "rows, mapping, preset, message",
    [
        ([{"question": "ok", "answer": "#### 1"}, {"answer": "#### 2"}], None, "gsm8k",
         r"row 1: field 'question' is missing \(null\)"),
        ([{"question": "ok", "answer": "1"}], {"prompt": "q"}, None,
         r"row 0: field 'q' is missing; columns are \['answer', 'question'\]"),
        ([{"question": "ok", "answer": "1"}, {"question": "q", "answer": "  "}], None, None,
         "row 1: field 'answer' is empty"),
        ([{"question": "q", "answer": "it is 4"}], None, "gsm8k", "row 0: field 'answer' has no '#### answer'"),
        ([{"problem": "p", "solution": r"\boxed{1}", "level": "Level 1"}, {"problem": "p", "solution": "no box", "level": "L2"}],
         None, "math", r"row 1: field 'solution' has no \\boxed\{\} answer"),
        ([{"problem": "p", "solution": r"\boxed{1}", "level": "hard"}], None, "math",
         "row 0: field 'level' holds no level number"),
    ],
)
def test_malformed_rows_name_the_row_and_field(tmp_path, rows, mapping, preset, message):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DatasetRowError, match=message):
        load_dataset_task(path, mapping=mapping, preset=preset)


def test_bad_arguments_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'gsm9k'; valid presets: gsm8k, math"):
        load_dataset_task(GSM8K, preset="gsm9k")
    with pytest.raises(ValueError, match="unknown key mapping.anwser"):
        load_dataset_task(GSM8K, mapping={"anwser": "a"})
    with pytest.raises(ValueError, match="mapping.extract: unknown extractor 'last'"):
        load_dataset_task(GSM8K, mapping={"extract": "last"})
    with pytest.raises(ValueError, match=r"unsupported file type '\.txt'"):
        bad = tmp_path / "rows.txt"
        bad.write_text("x")
        load_dataset_task(str(bad))
    with pytest.raises(ValueError, match="asked for 9 held-out problems, only 4"):
        load_dataset_task(GSM8K, preset="gsm8k").held_out(9)
