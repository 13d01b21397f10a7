"""`rlvr run RECIPE.yaml [--output-dir DIR] [--resume auto|PATH] [--rerun-changed] [--set key.path=value ...]`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlvr.config import ConfigError
from rlvr.errors import one_line
from rlvr.pipeline.runner import RECIPE_FILE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML file (see recipes/)")
    parser.add_argument("--output-dir", default=None,
                        help="run folder (default: runs/<recipe name>); must be empty unless resuming")
    parser.add_argument("--resume", default=None, metavar="auto|PATH",
                        help="continue a run: 'auto' continues the run in --output-dir (or the default "
                             "folder) if there is one and starts it otherwise; a PATH must hold a run. "
                             "Finished stages are skipped; the interrupted one resumes from its checkpoint")
    parser.add_argument("--rerun-changed", action="store_true",
                        help="with --resume: a stage that ran with other settings than the recipe's is "
                             "re-run, with every stage after it (their folders are replaced); without "
                             "it such a resume is refused, naming the changed keys")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override recipe keys, e.g. --set stages.2.steps=5 model.precision=fp32 "
                             "(values parsed as YAML; a number indexes a list)")
    parser.add_argument("--validate-only", action="store_true",
                        help="check the recipe (and every row of its local dataset files) and exit "
                             "without running anything")


def resolve_output_dir(args, recipe_name: str) -> tuple[Path, bool]:
    """(run folder, resume?) from --output-dir and --resume."""
    if args.resume not in (None, "auto"):
        if args.output_dir and Path(args.output_dir) != Path(args.resume):
            raise ConfigError(f"--resume {args.resume} and --output-dir {args.output_dir} name different folders")
        return Path(args.resume), True
    out = Path(args.output_dir) if args.output_dir else Path("runs") / recipe_name
    # `auto` (verl's resume_mode: auto): continue the run in `out` if there is one, else start it.
    return out, args.resume == "auto" and (out / RECIPE_FILE).is_file()


def main(args) -> int:
    from rlvr.pipeline.datacheck import check_local_datasets
    from rlvr.pipeline.recipe import load_recipe
    from rlvr.pipeline.runner import check_output_dir, run_recipe

    try:
        recipe = load_recipe(args.recipe, args.overrides)
        out, resume = resolve_output_dir(args, recipe.name)
        check_output_dir(out, resume)
        data_report = check_local_datasets(recipe)  # every row of every local file, before any work
    except ConfigError as e:
        print(f"rlvr run: {one_line(e)}", file=sys.stderr)
        return 2
    if args.validate_only:
        for line in data_report:
            print(line)
        print(f"{args.recipe}: valid ({len(recipe.stages)} stages: "
              f"{', '.join(f'{s.name} ({s.type})' for s in recipe.stages)})")
        return 0
    from accelerate import PartialState

    from rlvr.trainer.signals import Interrupted

    try:
        summary = run_recipe(recipe, out, resume=resume, rerun_changed=args.rerun_changed)
    except Interrupted as e:  # SIGTERM/SIGINT: a checkpoint is on disk; one line, no traceback
        if PartialState().is_main_process:
            print(f"rlvr run: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except ConfigError as e:  # refused by the runner (a live lock, changed settings on resume)
        print(f"rlvr run: {one_line(e)}", file=sys.stderr)
        return 2
    if PartialState().is_main_process:
        print_summary(summary, out)
    return 0


def print_summary(summary: dict, out: Path) -> None:
    """One line per stage, with the held-out accuracy of evals and self_improve."""
    print(f"[rlvr run] summary: {out / 'summary.json'}")
    for stage in summary["stages"]:
        acc = summary["accuracy_per_stage"].get(stage["name"])
        seconds = stage.get("seconds")
        print(f"  {stage['index']}-{stage['name']:<22} {stage['type']:<18} "
              f"{'' if seconds is None else f'{seconds:7.1f}s'}  "
              f"{'' if acc is None else f'held-out accuracy {acc:.3f}'}")
