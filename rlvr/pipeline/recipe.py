"""A recipe: a base model, a task, a prompt template and a list of stages, validated up front.

`load_recipe(path, overrides)` reads YAML, applies `--set key.path=value` overrides, and checks
every key before any work starts: an unknown key, a wrong type, a missing local file, a stage
reading from a stage that does not exist (or comes later), or an `sft` stage with no dataset each
raise `ConfigError` naming the key path. Nothing is written while validating.

    name: arithmetic-r1
    seed: 0
    model: {name_or_path: tiny, ...}          # rlvr.models.ModelConfig
    task: {name: arithmetic, difficulty: 1}   # rlvr.tasks.make_task
    template: r1                              # rlvr.tasks.render_prompt
    sampling: {max_new_tokens: 128}           # rlvr.rollout.sampling.SamplingConfig: every stage's default
    engine: {name: fast, kernels: torch}      # rlvr.rollout.engine_config.EngineConfig: likewise (or `engine: hf`)
    stages:
      - {type: sft, name: cold-start, dataset_from: generator, steps: 300}
      - {type: eval, name: eval-cold-start}
      - {type: grpo, name: grpo, steps: 50}   # model_from defaults to the previous training stage
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvr.config import ConfigError, apply_overrides, from_dict, load_yaml
from rlvr.pipeline.stages import stage_kind, STAGE_KINDS
from rlvr.pipeline.stages.registry import BASE, GENERATOR
from rlvr.rollout.engine_config import EngineConfig
from rlvr.rollout.sampling import SamplingConfig

RECIPE_LEVEL_KEYS = ("template", "instruction", "seed")
"""Set once per recipe and copied into every stage whose options have them: every stage renders
prompts the same way (`rlvr.tasks.prompts.PromptFormat`), so a stage may not set its own."""


@dataclass
class TaskSpec:
    """Which problems the recipe trains and evaluates on."""

    name: str = "arithmetic"
    """`rlvr.tasks.make_task` name: arithmetic, linear_equation, countdown, python_functions, mixed, dataset."""
    difficulty: int | list[int] | None = None
    """Level (or levels to mix); None = the source's default (level 1 for generators, every level
    for datasets). `self_improve` moves it with its curriculum."""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra keyword options for `make_task` (for `dataset`: source, mapping, split, preset, ...)."""


@dataclass
class StageSpec:
    """One validated stage of a recipe."""

    type: str
    """Stage type: a key of the stage registry (sft, grpo, rejection_sampling, eval, self_improve)."""
    name: str
    """Unique within the recipe; the stage folder is `<index>-<name>`."""
    model_from: str
    """`base` or the name of an earlier training stage whose `model/` this stage starts from."""
    dataset_from: str | None
    """For stages that read a dataset: `generator` or an earlier `rejection_sampling` stage."""
    options: Any
    """The stage type's own options dataclass."""

    @property
    def trains(self) -> bool:
        return stage_kind(self.type).trains


@dataclass
class Recipe:
    """A validated recipe."""

    name: str
    model: Any
    task: TaskSpec
    template: str
    seed: int
    stages: list[StageSpec]
    raw: dict = field(default_factory=dict, repr=False)
    """The plain data the recipe was built from (saved beside the run as recipe.yaml)."""
    instruction: str | None = None
    """The r1 templates' instruction (None: R1_INSTRUCTION), for every stage."""
    sampling: dict = field(default_factory=dict)
    """The recipe's `sampling:` keys: every sampling stage's default (its own keys win)."""
    engine: dict = field(default_factory=dict)
    """The recipe's `engine:` keys (a bare name as {name: ...}): every sampling stage's default."""

    @property
    def prompt_format(self):
        """How every stage of this recipe renders and encodes a problem."""
        from rlvr.tasks.prompts import PromptFormat

        return PromptFormat(self.template, self.instruction)

    def stage(self, name: str) -> StageSpec:
        return next(s for s in self.stages if s.name == name)


@dataclass
class _RecipeHeader:
    """Everything in a recipe except `stages` (parsed as a tagged union below)."""

    name: str
    """Recipe name; the default output folder is runs/<name>."""
    model: Any
    """The base model (`rlvr.models.ModelConfig`)."""
    task: TaskSpec = field(default_factory=TaskSpec)
    """The problem source."""
    template: str = "r1"
    """Prompt template for `render_prompt`: plain, r1, chat, r1_chat."""
    instruction: str | None = None
    """Instruction of the r1 templates (None: R1_INSTRUCTION); every stage renders prompts with it."""
    seed: int = 0
    """Seed of the task streams and of every trainer."""
    sampling: dict[str, Any] = field(default_factory=dict)
    """The keys of `rlvr.rollout.sampling.SamplingConfig` every sampling stage (and self_improve's
    rounds) takes unless it sets its own; checked as a SamplingConfig."""
    engine: dict[str, Any] | str = field(default_factory=dict)
    """The rollout engine (`rlvr.rollout.engine_config.EngineConfig`: a name, or a mapping of the
    name and the fast engine's options) every sampling stage takes unless it sets its own keys."""


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file (see the module docstring)."""
    data = load_yaml(path)
    data = apply_overrides(copy.deepcopy(data), overrides or [])
    return parse_recipe(data)


def parse_recipe(data: dict) -> Recipe:
    """Validate plain recipe data; raises one `ConfigError` listing every bad key path (one per
    line: the model, the task, the template and each stage are checked independently).

    Relative paths in a recipe (model folder, dataset files) are relative to the working directory.
    """
    from rlvr.models.config import ModelConfig

    data = copy.deepcopy(data)
    if not isinstance(data, dict):
        raise ConfigError(f"recipe: expected a mapping, got {type(data).__name__}")
    raw_stages = data.pop("stages", None)
    if "model" not in data:
        raise ConfigError("missing required key model")
    model_data = data.pop("model")
    errors: list[str] = []  # every independent error of the recipe, reported together
    header = from_dict(_RecipeHeader, {**data, "model": None})
    header.model = _collect(errors, lambda: from_dict(ModelConfig, model_data, "model"))
    if header.model is not None:
        _collect(errors, lambda: _check_local_path(getattr(header.model, "name_or_path", None), "model.name_or_path"))
    _collect(errors, lambda: _check_task(header.task, header.seed))
    _collect(errors, lambda: _check_template(header.template))
    if _collect(errors, lambda: from_dict(SamplingConfig, header.sampling, "sampling")) is None:
        header.sampling = {}  # reported once here, not again by every stage that would inherit it
    if isinstance(header.engine, str):
        header.engine = {"name": header.engine}  # `engine: fast`: the stages merge it key by key
    if _collect(errors, lambda: from_dict(EngineConfig, header.engine, "engine")) is None:
        header.engine = {}  # as sampling: reported once
    if not isinstance(raw_stages, list) or not raw_stages:
        errors.append("stages: a recipe needs a non-empty list of stages")
        raw_stages = []
    stages: list[StageSpec] = []
    for i, raw in enumerate(raw_stages):
        stage = _collect(errors, lambda: _parse_stage(raw, i, stages, header))
        stages.append(stage or _stand_in(raw))
    if errors:
        raise ConfigError("\n".join(errors))
    return Recipe(header.name, header.model, header.task, header.template, header.seed, stages,
                  raw={**data, "model": model_data, "stages": raw_stages}, instruction=header.instruction,
                  sampling=header.sampling, engine=header.engine)


def _collect(errors: list[str], check):
    """check()'s result, or None with its ConfigError's message added to `errors`."""
    try:
        return check()
    except ConfigError as e:
        errors.append(str(e))
        return None


def _stand_in(raw: Any) -> StageSpec:
    """A stage that failed validation, kept by type and name so later stages may refer to it
    without a second, misleading error."""
    raw = raw if isinstance(raw, dict) else {}
    kind = raw.get("type") if raw.get("type") in STAGE_KINDS else "eval"
    return StageSpec(kind, str(raw.get("name", kind)), BASE, None, None)


def _parse_stage(raw: Any, i: int, earlier: list[StageSpec], header: _RecipeHeader) -> StageSpec:
    where = f"stages.{i}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    raw = dict(raw)
    kind_name = raw.pop("type", None)
    if kind_name is None:
        raise ConfigError(f"missing required key {where}.type; valid types: {', '.join(STAGE_KINDS.names())}")
    if kind_name not in STAGE_KINDS:
        raise ConfigError(f"{where}.type: {STAGE_KINDS.unknown(kind_name)}")
    kind = stage_kind(kind_name)
    name = raw.pop("name", kind_name)
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(f"{where}.name: expected a non-empty string without '/', got {name!r}")
    if name in (BASE, GENERATOR) or any(s.name == name for s in earlier):
        raise ConfigError(f"{where}.name: {name!r} is already used (names must be unique and not "
                          f"'{BASE}' or '{GENERATOR}')")
    model_from = _model_from(raw.pop("model_from", None), where, earlier, name)
    dataset_from = _dataset_from(raw.pop("dataset_from", None), where, earlier, kind)
    _reject_recipe_keys(raw, where)
    # the recipe's sampling and engine keys fill what the stage (and the configs nested in it) leave out
    defaults = {SamplingConfig: header.sampling, EngineConfig: header.engine}
    options = with_recipe_keys(from_dict(kind.options(), raw, where, defaults), header.template, header.seed,
                               header.instruction)
    return StageSpec(kind_name, name, model_from, dataset_from, options)


def with_recipe_keys(options: Any, template: str, seed: int, instruction: str | None = None) -> Any:
    """`options` with the recipe's template, instruction and seed in the fields it has of those
    names (nested option blocks, e.g. self_improve's grpo, get theirs when they are used)."""
    names = {f.name for f in dataclasses.fields(options)}
    values = {"template": template, "seed": seed, "instruction": instruction}
    return dataclasses.replace(options, **{k: v for k, v in values.items() if k in names})


def _reject_recipe_keys(raw: dict, where: str) -> None:
    """A stage (or a config nested in it) may not set the recipe-level keys itself."""
    for key in RECIPE_LEVEL_KEYS:
        if key in raw:
            raise ConfigError(f"{where}.{key}: set it once at the top of the recipe ({key}: ...), "
                              f"not per stage")
    for name, value in raw.items():
        if isinstance(value, dict):
            for key in RECIPE_LEVEL_KEYS:
                if key in value:
                    raise ConfigError(f"{where}.{name}.{key}: set it once at the top of the recipe")


def _model_from(value: Any, where: str, earlier: list[StageSpec], name: str) -> str:
    trained = [s.name for s in earlier if s.trains]
    if value is None:  # the previous training stage, or the base model when there is none
        return trained[-1] if trained else BASE
    if not isinstance(value, str):
        raise ConfigError(f"{where}.model_from: expected a string, got {value!r}")
    if value == BASE or value in trained:
        return value
    if value == name:
        raise ConfigError(f"{where}.model_from: stage {name!r} cannot read its own model")
    if any(s.name == value for s in earlier):
        raise ConfigError(f"{where}.model_from: stage {value!r} does not train a model; "
                          f"choose '{BASE}' or one of {trained}")
    raise ConfigError(f"{where}.model_from: no earlier stage named {value!r} (a stage can only read "
                      f"a model written before it); choose '{BASE}' or one of {trained}")


def _dataset_from(value: Any, where: str, earlier: list[StageSpec], kind) -> str | None:
    producers = [s.name for s in earlier if stage_kind(s.type).writes_dataset]
    if not kind.reads_dataset:
        if value is not None:
            raise ConfigError(f"{where}.dataset_from: a {kind.type} stage reads no dataset")
        return None
    if value is None:
        raise ConfigError(f"{where}.dataset_from: an {kind.type} stage needs a dataset: "
                          f"'{GENERATOR}' (the task's worked solutions) or one of {producers}")
    if not isinstance(value, str):
        raise ConfigError(f"{where}.dataset_from: expected a string, got {value!r}")
    if value == GENERATOR or value in producers:
        return value
    raise ConfigError(f"{where}.dataset_from: no earlier rejection_sampling stage named {value!r}; "
                      f"choose '{GENERATOR}' or one of {producers}")


DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv")
"""A dataset `source` ending like this is a local file (else a hub name)."""


def _looks_local(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~"))


def _check_local_path(value: Any, where: str) -> None:
    """A local path (absolute, ./, ../ or ~) must exist; hub ids and built-in names pass."""
    if isinstance(value, (str, Path)) and _looks_local(str(value)):
        if not Path(str(value)).expanduser().exists():
            raise ConfigError(f"{where}: file not found: {value}")


def _check_task(task: TaskSpec, seed: int) -> None:
    """Build a generator task now (cheap) so bad names/levels/options fail before any work.

    A `dataset` task is not loaded here (that may download); its local files must exist.
    """
    from rlvr.tasks import make_task

    if task.name == "dataset":
        source = task.options.get("source")  # a hub name, a local file, or {split: file}
        files = source.items() if isinstance(source, dict) else [(None, source)]
        for split, item in files:
            where = "task.options.source" + (f".{split}" if split else "")
            if isinstance(item, str) and (_looks_local(item) or Path(item).suffix in DATA_SUFFIXES):
                _check_local_path(item if _looks_local(item) else f"./{item}", where)
        return
    try:
        make_task(task.name, seed=seed, difficulty=task.difficulty, **task.options)
    except (KeyError, ValueError, TypeError) as e:
        raise ConfigError(f"task: {e}") from e


def _check_template(template: str) -> None:
    from rlvr.tasks import available_templates

    if template not in available_templates():
        raise ConfigError(f"template: unknown template {template!r}; valid: {', '.join(available_templates())}")
