"""Every bad recipe fails before any work with an error naming the key path, and writes nothing."""
from __future__ import annotations

import copy

import pytest
import yaml

from rlvr.cli import main as rlvr_main
from rlvr.config import ConfigError
from rlvr.pipeline.recipe import BASE, GENERATOR, parse_recipe

GOOD = {
    "name": "t",
    "model": {"name_or_path": "tiny", "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                               "intermediate_size": 64}},
    "task": {"name": "arithmetic", "difficulty": 1, "options": {"ops": ["+"]}},
    "stages": [
        {"type": "sft", "name": "cold", "dataset_from": "generator", "steps": 3},
        {"type": "eval", "name": "ev", "num_problems": 5},
        {"type": "rejection_sampling", "name": "rs", "num_problems": 4},
        {"type": "sft", "name": "sft2", "dataset_from": "rs"},
        {"type": "grpo", "name": "g", "steps": 2},
    ],
}


def bad(edit):
    data = copy.deepcopy(GOOD)
    edit(data)
    return data


# (id, edit of the good recipe, text the error must contain)
CASES = [
    ("unknown top-level key", lambda d: d.update(modle={}), "unknown key modle"),
    ("unknown stage key", lambda d: d["stages"][1].update(stepz=3), "unknown key stages.1.stepz"),
    ("wrong type in stage", lambda d: d["stages"][0].update(steps="ten"), "stages.0.steps: expected an integer"),
    ("wrong type in model", lambda d: d["model"]["tiny"].update(hidden_size="big"), "model.tiny.hidden_size"),
    ("bad value in stage", lambda d: d["stages"][4].update(num_generations=1), "stages.4: num_generations"),
    ("missing model dir", lambda d: d["model"].update(name_or_path="./no-such-model"),
     "model.name_or_path: file not found"),
    ("missing dataset file", lambda d: d.update(task={"name": "dataset", "options": {"source": "./missing.jsonl"}}),
     "task.options.source: file not found"),
    ("missing split file", lambda d: d.update(task={"name": "dataset", "options": {
        "source": {"train": "data/none.jsonl"}}}), "task.options.source.train: file not found"),
    ("unknown task", lambda d: d["task"].update(name="arithmatic"), "unknown task 'arithmatic'"),
    ("bad task option", lambda d: d["task"]["options"].update(ops=["^"]), "task: arithmetic: ops"),
    ("unknown template", lambda d: d.update(template="r2"), "template: unknown template 'r2'"),
    ("sft with no dataset", lambda d: d["stages"][0].pop("dataset_from"), "stages.0.dataset_from"),
    ("dataset from a later stage", lambda d: d["stages"][0].update(dataset_from="rs"),
     "stages.0.dataset_from: no earlier rejection_sampling stage named 'rs'"),
    ("dataset from a non-dataset stage", lambda d: d["stages"][3].update(dataset_from="ev"),
     "stages.3.dataset_from"),
    ("dataset_from on eval", lambda d: d["stages"][1].update(dataset_from="generator"),
     "stages.1.dataset_from: a eval stage reads no dataset"),
    ("model from unknown stage", lambda d: d["stages"][4].update(model_from="nope"),
     "stages.4.model_from: no earlier stage named 'nope'"),
    ("model from a later stage", lambda d: d["stages"][1].update(model_from="g"),
     "stages.1.model_from: no earlier stage named 'g'"),
    ("model from a non-training stage", lambda d: d["stages"][4].update(model_from="ev"),
     "stages.4.model_from: stage 'ev' does not train a model"),
    ("unknown stage type", lambda d: d["stages"][1].update(type="evaluate"), "stages.1.type: unknown stage type"),
    ("duplicate stage name", lambda d: d["stages"][3].update(name="cold"), "stages.3.name: 'cold' is already used"),
    ("template set per stage", lambda d: d["stages"][4].update(template="plain"), "stages.4.template"),
    ("no stages", lambda d: d.update(stages=[]), "stages: a recipe needs"),
    ("missing name", lambda d: d.pop("name"), "missing required key name"),
    # registry names are checked when the recipe is parsed, not when the last stage starts
    ("unknown loss in the last stage", lambda d: d["stages"][4].update(loss_type="dapoo"),
     "stages.4.loss_type: unknown policy loss 'dapoo'; valid: "),
    ("unknown advantage", lambda d: d["stages"][4].update(advantage="ppo"), "stages.4.advantage: unknown"),
    ("unknown kl estimator", lambda d: d["stages"][4].update(kl_type="k4"), "stages.4.kl_type: unknown"),
    ("unknown grpo engine", lambda d: d["stages"][4].update(engine="vllm"),
     "stages.4.engine.name: unknown rollout engine 'vllm'; valid: auto, fast, hf"),
    ("unknown tracker", lambda d: d["stages"][4].update(report_to="mlflow"), "stages.4.report_to: "),
    ("unknown eval engine", lambda d: d["stages"][1].update(engine="vllm"), "stages.1.engine.name: unknown rollout"),
    ("unknown rejection-sampling engine", lambda d: d["stages"][2].update(engine="vlm"),
     "stages.2.engine.name: unknown rollout engine 'vlm'"),
    ("unknown sft schedule", lambda d: d["stages"][0].update(lr_scheduler="cosin"),
     "stages.0.lr_scheduler: unknown learning-rate schedule 'cosin'; valid: "),
    # and in the configs nested in a self_improve stage
    ("unknown loss in self_improve's grpo", lambda d: d["stages"].append(
        {"type": "self_improve", "name": "si", "train": "grpo", "grpo": {"loss_type": "dapoo"}}),
     "stages.5.grpo.loss_type: unknown policy loss 'dapoo'"),
    ("unknown engine in self_improve's eval", lambda d: d["stages"].append(
        {"type": "self_improve", "name": "si", "eval": {"engine": "vllm"}}), "stages.5.eval.engine.name: unknown"),
    ("unknown engine in self_improve's generate", lambda d: d["stages"].append(
        {"type": "self_improve", "name": "si", "generate": {"engine": "vllm"}}), "stages.5.generate.engine.name: unknown"),
    ("unknown schedule in self_improve's sft", lambda d: d["stages"].append(
        {"type": "self_improve", "name": "si", "sft": {"lr_scheduler": "cosin"}}), "stages.5.sft.lr_scheduler: unknown"),
    ("old precision key", lambda d: d["model"].update(dtype="float32"), "model.dtype: renamed to precision"),
    # one name for samples per prompt (TRL's num_generations) in every stage
    ("old eval samples key", lambda d: d["stages"][1].update(k=8), "stages.1.k: renamed to num_generations"),
    ("old rejection-sampling samples key", lambda d: d["stages"][2].update(samples_per_problem=4),
     "stages.2.samples_per_problem: renamed to num_generations"),
    ("old samples key in self_improve's generate", lambda d: d["stages"].append(
        {"type": "self_improve", "name": "si", "generate": {"samples_per_problem": 2}}),
     "stages.5.generate.samples_per_problem: renamed to num_generations"),
    ("old clip name", lambda d: d["stages"][4].update(epsilon_low=0.1), "stages.4.epsilon_low: renamed to epsilon"),
    # the sampling block, wherever it is set
    ("bad recipe-level sampling", lambda d: d.update(sampling={"top_k": -1}), "sampling.top_k: must be >= 0"),
    ("unknown sampling key", lambda d: d["stages"][4].update(sampling={"temp": 1}), "unknown key stages.4.sampling.temp"),
    ("wrong sampling type", lambda d: d["stages"][1].update(sampling={"stop": "</answer>"}),
     "stages.1.sampling.stop: expected a list"),
    ("flat sampling key in grpo", lambda d: d["stages"][4].update(max_new_tokens=0),
     "stages.4.sampling.max_new_tokens: must be >= 1"),
    ("greedy rejection sampling", lambda d: d["stages"][2].update(temperature=0.0),
     "stages.2.sampling.temperature: must be > 0"),
    ("negative eval samples", lambda d: d["stages"][1].update(num_generations=-1), "stages.1: num_generations must be >= 0"),
    ("no rejection samples", lambda d: d["stages"][2].update(num_generations=0), "stages.2: num_generations must be >= 1"),
    ("difficulty in self_improve's generate", lambda d: d["stages"].append(
        {"type": "self_improve", "name": "si", "generate": {"difficulty": 2}}),
     "stages.5.generate.difficulty: the curriculum sets each round's level"),
    ("bad sampling in self_improve's grpo", lambda d: d["stages"].append(
        {"type": "self_improve", "name": "si", "grpo": {"top_p": 2}}), "stages.5.grpo.sampling.top_p: must be in (0, 1]"),
]


@pytest.mark.parametrize("edit,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_recipe_names_the_key_and_writes_nothing(tmp_path, capsys, edit, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(bad(edit)))
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=None) as err:
        parse_recipe(bad(edit))
    assert message in str(err.value)
    assert rlvr_main(["run", str(path), "--output-dir", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("key", ["stages.7.sampling.temperature", "stages.7.temperature", "sampling.temperature"])
def test_validate_only_names_a_bad_sampling_value_in_the_last_stage_and_writes_nothing(tmp_path, capsys, key):
    out = tmp_path / "run"
    argv = ["run", "recipes/arithmetic-r1.yaml", "--output-dir", str(out), "--validate-only", "--set", f"{key}=-1"]
    assert rlvr_main(argv) == 2
    err = capsys.readouterr().err
    where = "sampling.temperature" if key.startswith("sampling") else "stages.7.sampling.temperature"
    assert f"{where}: must be >= 0 (0 = greedy), got -1" in err and err.count("\n") == 1, err
    assert err.count("got -1") == 1  # a bad recipe default is named once, not again by each stage
    assert not out.exists()
    assert rlvr_main(argv[:-2]) == 0  # the shipped recipe itself is valid
    assert not out.exists()


def test_defaults_chain_models_and_copy_recipe_keys():
    recipe = parse_recipe(GOOD)
    by_name = {s.name: s for s in recipe.stages}
    assert by_name["cold"].model_from == BASE
    assert by_name["ev"].model_from == "cold"          # the previous training stage
    assert by_name["sft2"].model_from == "cold"        # rejection sampling trains nothing
    assert by_name["g"].model_from == "sft2"
    assert by_name["cold"].dataset_from == GENERATOR
    assert by_name["g"].options.template == recipe.template == "r1"


def test_set_override_reaches_stage_options_and_bad_override_is_named(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    from rlvr.pipeline.recipe import load_recipe

    assert load_recipe(path, ["stages.4.steps=7"]).stages[4].options.steps == 7
    assert rlvr_main(["run", str(path), "--output-dir", str(tmp_path / "o"), "--set", "stages.9.steps=1"]) == 2
    assert "stages.9" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_output_dir_with_another_run_is_refused(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    out = tmp_path / "run"
    out.mkdir()
    (out / "something").write_text("x")
    assert rlvr_main(["run", str(path), "--output-dir", str(out)]) == 2
    assert "--resume auto" in capsys.readouterr().err
    assert rlvr_main(["run", str(path), "--resume", str(tmp_path / "new")]) == 2
    assert "no run to resume" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


RECIPE_TEXT = """\
name: t
model:
  name_or_path: tiny
  tiny: {hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64}
task: {name: arithmetic, difficulty: 1}
stages:
- type: sft
  steps: 3
  dataset_from: generator
  name: cold
"""


@pytest.mark.parametrize(
    "extra, key, lines",
    [("name: t2\n", "name", (1, 11)), ("  steps: 5\n", "steps", (8, 11))],
    ids=["top level", "inside a stage"],
)
def test_duplicate_key_is_refused_with_both_lines(tmp_path, capsys, extra, key, lines):
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE_TEXT)
    run_args = ["--output-dir", str(tmp_path / "run"), "--validate-only"]
    assert rlvr_main(["run", str(path), *run_args]) == 0  # the recipe itself is valid
    capsys.readouterr()
    path.write_text(RECIPE_TEXT + extra)
    assert rlvr_main(["run", str(path), *run_args]) != 0
    err = capsys.readouterr().err
    assert f"duplicate key '{key}' (lines {lines[0]} and {lines[1]})" in err, err
    assert not (tmp_path / "run").exists()


def test_importing_the_recipe_parser_loads_no_torch():
    """Stage options are declared without torch; only running (or checking a registry name of) a
    stage loads it."""
    import subprocess
    import sys

    code = "import sys, rlvr.pipeline.recipe; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_error_of_a_recipe_is_reported_at_once(tmp_path, capsys):
    data = bad(lambda d: (d["stages"][1].update(stepz=3), d["stages"][4].update(loss_type="dapoo"),
                          d.update(template="r2")))
    with pytest.raises(ConfigError) as err:
        parse_recipe(data)
    for message in ("unknown key stages.1.stepz", "stages.4.loss_type: unknown policy loss 'dapoo'",
                    "template: unknown template 'r2'"):
        assert message in str(err.value)
    # a stage that failed is still known by name: the stage reading its dataset gets no second error
    assert "stages.3.dataset_from" not in str(bad_rs := parse_error(bad(lambda d: d["stages"][2].update(k=1))))
    assert "stages.2" in bad_rs
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    assert rlvr_main(["run", str(path), "--validate-only"]) == 2
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and "stepz" in err_text and "dapoo" in err_text  # one line


def parse_error(data) -> str:
    with pytest.raises(ConfigError) as err:
        parse_recipe(data)
    return str(err.value)
