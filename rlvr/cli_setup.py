"""Command-line plumbing shared by the commands that load a policy (`rlvr eval`, `rlvr search`,
`rlvr generate`, `rlvr train-rm`): their model, engine, generation and task options, loading the
policy and reward models, building the search context, drawing problems from a task.

The search and eval packages are imported inside the functions that use them, so the commands'
layers (eval, reward models, search) each import this module and none imports another's CLI.
"""
from __future__ import annotations

import argparse
import codecs


def _fail(message: str) -> Exception:
    """The commands' one-line error (`rlvr.search.base.SearchError`, imported when one is raised)."""
    from rlvr.search.base import SearchError

    return SearchError(message)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    from rlvr.search.context import GenerationConfig

    gen = GenerationConfig()  # the defaults of search generation live there only
    g = parser.add_argument_group("policy and scorers")
    g.add_argument("--model", default="tiny", help="policy: a run's model dir, a hub name, 'tiny' or 'smollm2-135m'")
    g.add_argument("--orm", help="directory of a trained ORM (loads scorer 'orm')")
    g.add_argument("--prm", help="directory of a trained PRM (loads scorer 'prm')")
    g.add_argument("--judge", help="a causal LM used as LLM-as-a-judge (loads scorer 'judge')")
    g.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    g.add_argument("--engine", default="auto", type=engine_argument,
                   help="rollout engine: auto (fast on CUDA when the model fits, else hf), fast or hf; or a "
                        "YAML mapping with the fast engine's options, as a recipe's engine: "
                        "'{name: fast, kernels: torch}'")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (tiny models on a busy CPU run far faster with 1)")
    s = parser.add_argument_group("generation")
    s.add_argument("--template", default="r1", help="prompt template (rlvr.tasks.render_prompt)")
    s.add_argument("--instruction", default=None,
                   help="instruction of the r1 templates (default: the one recipes use unless they set theirs)")
    s.add_argument("--temperature", type=float, default=gen.temperature, help="sampling temperature")
    s.add_argument("--max-new-tokens", type=int, default=gen.max_new_tokens, help="cap on a solution's tokens")
    s.add_argument("--max-step-tokens", type=int, default=gen.max_step_tokens, help="cap on one step's tokens")
    s.add_argument("--step-separator", default=codecs.encode(gen.step_separator, "unicode_escape").decode(),
                   help="text ending a step, backslash escapes allowed (default: a blank line, '\\n\\n')")


def engine_argument(text: str):
    """--engine's value as an `EngineConfig`: a name, or a YAML mapping (a recipe's `engine:`)."""
    import yaml

    from rlvr.config import ConfigError, from_dict
    from rlvr.rollout.engine_config import EngineConfig

    try:
        return from_dict(EngineConfig, yaml.safe_load(text))  # argparse names --engine
    except (ConfigError, yaml.YAMLError) as e:
        raise argparse.ArgumentTypeError(str(e).splitlines()[0]) from None


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("problems")
    g.add_argument("--task", default="arithmetic", help="task name (rlvr.tasks.make_task)")
    g.add_argument("--difficulty", default="1", help="difficulty levels, comma-separated (e.g. 1,2,3)")
    g.add_argument("--num-problems", type=int, default=20, help="held-out problems per difficulty level")
    g.add_argument("--task-seed", type=int, default=0, help="seed of the task generator")
    g.add_argument("--task-options", default="{}",
                   help="task options as a YAML mapping, e.g. '{ops: [\"+\"]}' (the default recipe's task)")


def parse_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise _fail(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise _fail(f"{what}: expected positive integers, got {text!r}")
    return values


def needed_scorers(cfg) -> set[str]:
    """The scorers a method's config reads (nested configs of `adaptive` included)."""
    import dataclasses

    names = set()
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            names |= needed_scorers(value)
        elif f.name == "confidence_scorer" and getattr(cfg, "check", None) == "verifier":
            continue  # adaptive trusts the verifier then
        elif f.name == "scorer" or f.name.endswith("_scorer"):
            names.add(value)
    return names


def check_scorers(configs: dict, args) -> None:
    """Before any model loads: every method's scorers are loaded by --orm/--prm/--judge."""
    from rlvr.eval.curves import CONFIDENCE

    loaded = {"verifier", CONFIDENCE} | {k for k in ("orm", "prm", "judge") if getattr(args, k, None)}
    for label, cfg in configs.items():
        missing = sorted(needed_scorers(cfg) - loaded)
        if not missing:
            continue
        what = missing[0]
        how = "--judge MODEL" if what == "judge" else f"--{what} DIR (train one with `rlvr train-rm --kind {what}`)"
        raise _fail(f"{label} scores with {what!r}, which is not loaded: pass {how}, or choose a "
                          "method that needs no reward model (majority_vote)")


def check_model(name_or_path: str, option: str = "--model") -> None:
    """A local-looking model path must exist (else transformers takes it for a hub id)."""
    from pathlib import Path

    if name_or_path.startswith(("/", "./", "../", "~")) and not Path(name_or_path).expanduser().exists():
        raise _fail(f"{option} {name_or_path}: no such folder")


def load_model(name_or_path: str, device, option: str = "--model"):
    """The policy, or a one-line error naming the option when it cannot be loaded."""
    from rlvr.models import ModelConfig, load_policy

    check_model(name_or_path, option)
    try:
        return load_policy(ModelConfig(name_or_path=name_or_path), device=device, train=False)
    except OSError as e:  # not a model folder, or a hub id that cannot be fetched
        raise _fail(f"{option} {name_or_path}: cannot load a model: {str(e).splitlines()[0]}") from e


def build_context(args):
    """(SearchContext, Policy) from parsed arguments."""
    import torch

    from rlvr.reward_models.model import load_reward_model
    from rlvr.rollout import make_engine
    from rlvr.search.context import GenerationConfig, SearchContext
    from rlvr.search.scorers import RewardModelScorer

    torch.manual_seed(args.seed)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    policy = load_model(args.model, args.device)
    generation = GenerationConfig(
        temperature=args.temperature, max_new_tokens=args.max_new_tokens, max_step_tokens=args.max_step_tokens,
        step_separator=codecs.decode(args.step_separator, "unicode_escape"),
    )
    scorers = {}
    for kind in ("orm", "prm"):
        path = getattr(args, kind, None)
        if path:
            scorers[kind] = RewardModelScorer(load_reward_model(path, expect=kind, device=str(policy.device)))
    if getattr(args, "judge", None):
        from rlvr.search.judge import JudgeScorer

        judge = load_model(args.judge, args.device, "--judge")
        scorers["judge"] = JudgeScorer(judge.model, judge.tokenizer)
    engine = make_engine(getattr(args, "engine", "auto"), policy.model, policy.tokenizer)  # auto: choose_engine
    return SearchContext(engine, policy.tokenizer, generation, scorers), policy


def task_options(args) -> dict:
    import yaml

    try:
        options = yaml.safe_load(getattr(args, "task_options", "{}") or "{}")
    except yaml.YAMLError as e:
        raise _fail(f"--task-options: not valid YAML: {e}") from None
    if not isinstance(options, dict):
        raise _fail(f"--task-options: expected a mapping, got {options!r}")
    return options


def prompt_format(args):
    """The PromptFormat of --template and --instruction (as a recipe's template and instruction)."""
    from rlvr.tasks.prompts import PromptFormat

    return PromptFormat(args.template, getattr(args, "instruction", None))


def load_problems(args, tokenizer, split: str = "held_out") -> list:
    """`rlvr.search.Problem`s at every --difficulty level: the task's fixed held-out split, or
    ('train') its stream."""
    from rlvr.search.base import Problem
    from rlvr.tasks import make_task

    problems = []
    for level in parse_ints(args.difficulty, "--difficulty"):
        try:
            task = make_task(args.task, seed=args.task_seed, difficulty=level, **task_options(args))
        except (KeyError, ValueError, TypeError, FileNotFoundError) as e:
            raise _fail(f"--task {args.task}: {e}") from e
        examples = task.held_out(args.num_problems) if split == "held_out" else task.sample(args.num_problems)
        for ex in examples:
            problems.append(Problem(prompt_format(args).render(ex, tokenizer), ex))
    return problems
