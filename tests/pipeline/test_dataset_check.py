"""`rlvr run --validate-only` opens every local dataset file and checks each row: an empty file,
a line that is not JSON and a row without the answer field are named by file and row number."""
from __future__ import annotations

import json

import pytest
import yaml

from rlvr.cli import main as rlvr_main

GOOD = {"question": "What is 2+3?", "answer": "5"}


def _recipe(tmp_path, data_file):
    recipe = {"name": "data", "template": "plain",
              "model": {"name_or_path": "tiny"},
              "task": {"name": "dataset", "options": {"source": str(data_file)}},
              "stages": [{"type": "eval", "name": "ev", "num_problems": 2, "num_generations": 0}]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return ["run", str(path), "--output-dir", str(tmp_path / "run"), "--validate-only"]


def test_a_good_file_is_counted(tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(GOOD) + "\n" for _ in range(3)))
    assert rlvr_main(_recipe(tmp_path, data)) == 0
    assert f"{data}: 3 rows, each with 'question' and 'answer'" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ("", "the dataset file is empty (no rows)"),
    (json.dumps(GOOD) + "\n{not json\n", "row 2 is not a JSON object (Expecting property name"),
    (json.dumps(GOOD) + "\n" + json.dumps({"question": "1+1?"}) + "\n", "row 2: field 'answer' is missing"),
], ids=["empty", "not JSON", "no answer"])
def test_a_bad_file_names_the_first_bad_row(tmp_path, capsys, content, message):
    data = tmp_path / "train.jsonl"
    data.write_text(content)
    assert rlvr_main(_recipe(tmp_path, data)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rlvr run: {data}") and message in err and "\n" not in err, err
    assert not (tmp_path / "run").exists()
