"""Every shipped recipe validates; the hub recipes' data mapping works on local fixture files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlvr.pipeline.context import StageContext
from rlvr.pipeline.recipe import load_recipe
from rlvr.trainer.sft import worked_solution_pairs

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.stages
    assert any(s.type == "eval" for s in recipe.stages)


def _task(recipe, index: int = 0, for_eval: bool = False):
    ctx = StageContext(recipe=recipe, stage=recipe.stages[index], index=index, stage_dir=Path("unused"),
                       model_dir=None, dataset_dir=None, resume=False)
    return ctx.make_task(for_eval=for_eval)


def test_gsm8k_recipe_maps_fixture_rows(tmp_path):
    files = {"train": str(FIXTURES / "gsm8k_train.jsonl"), "test": str(FIXTURES / "gsm8k_test.jsonl")}
    recipe = load_recipe(ROOT / "recipes" / "qwen2.5-1.5b-gsm8k.yaml",
                         [f"task.options.source={json.dumps(files)}"])
    train = _task(recipe, 1).sample(12)
    first = json.loads((FIXTURES / "gsm8k_train.jsonl").read_text().splitlines()[0])
    mapped = next(e for e in train if e.prompt == first["question"])
    assert mapped.reference == first["answer"].rsplit("####", 1)[1].strip()
    assert mapped.kind == "math"
    assert mapped.solution.startswith("<think>") and "<<" not in mapped.solution  # calculator notes dropped
    test_rows = [json.loads(l) for l in (FIXTURES / "gsm8k_test.jsonl").read_text().splitlines()]
    held = _task(recipe, 0, for_eval=True).held_out(len(test_rows))
    assert {e.prompt for e in held} == {r["question"] for r in test_rows}  # held out: the `test` split
    assert {e.reference for e in held} == {r["answer"].rsplit("####", 1)[1].strip().replace(",", "")
                                           for r in test_rows}
    # The cold-start SFT stage reads the worked answers as prompt/completion pairs.
    pairs = worked_solution_pairs(train[:2], None, "r1")
    assert pairs[0]["completion"].endswith("</answer>")


def test_math_recipe_maps_fixture_rows():
    recipe = load_recipe(ROOT / "recipes" / "qwen2.5-math-1.5b-math.yaml",
                         [f"task.options.source={FIXTURES / 'math_train.jsonl'}"])
    task = _task(recipe, 1)
    rows = [json.loads(l) for l in (FIXTURES / "math_train.jsonl").read_text().splitlines()]
    examples = task.sample(len(rows)) + _task(recipe, 0, for_eval=True).held_out(1)
    by_prompt = {e.prompt: e for e in examples}
    half = by_prompt[r"What is $\frac{1}{2}+\frac{1}{4}$?"]
    assert half.reference == r"\frac{3}{4}"       # the last \boxed{} of the solution
    assert half.difficulty == 1                     # "Level 1"
    assert {e.difficulty for e in examples} > {1}   # every level kept (no difficulty filter)
