"""Run a validated recipe stage by stage, with stage-level resume.

Layout of a run (`<out>`):
    recipe.yaml              the recipe as run (after --set overrides)
    <i>-<name>/              one folder per stage; `model/` when it trains, `dataset/` for
                             rejection sampling, its own `metrics.jsonl` and checkpoints
    <i>-<name>/DONE.json     written last (atomically) when the stage finished: its metrics
    metrics.jsonl            every stage's rows, each tagged with `stage` and `stage_index`
    summary.json             each stage with its metrics (`accuracy` for every eval)
    plots/*.png              reward per step (grpo), accuracy per stage and per round

A run folder has one owner: the main process holds `<out>/.lock` while the run lives (`lock.py`).
Each stage folder records the settings it ran with (`FINGERPRINT.json`, `fingerprint.py`). With
`resume`, a finished stage (DONE.json present) is skipped and the first unfinished stage continues
from its own checkpoint (grpo through run_grpo's resume, sft through the HF Trainer's
resume_from_checkpoint), but only when its recorded settings match the recipe's: otherwise the
resume is refused naming the changed keys, or, with `rerun_changed`, that stage and every later
one are cleared and run again. `recipe.yaml` is written once those checks pass, so it always
describes what is on disk. Under `accelerate launch` every process runs every stage; only the
main process takes the lock and writes the run-level files.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import yaml

from rlvr.config import ConfigError
from rlvr.pipeline import fingerprint, lock
from rlvr.pipeline.context import DATASET_DIR, MODEL_DIR, StageContext
from rlvr.pipeline.recipe import BASE, GENERATOR, Recipe
from rlvr.pipeline.stages import stage_kind
from rlvr.pipeline.summary import DONE_FILE, write_run_files

RECIPE_FILE = "recipe.yaml"


def stage_dir(out: Path, index: int, name: str) -> Path:
    return out / f"{index}-{name}"


def check_output_dir(out: Path, resume: bool) -> None:
    """Refuse a folder another live run owns, two runs in one folder, and resuming a folder that
    holds no run."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output-dir {out} exists and is not a folder")
    lock.check_not_locked(out)
    has_content = out.is_dir() and any(p.name != lock.LOCK_FILE for p in out.iterdir())
    if resume and not (out / RECIPE_FILE).is_file():
        raise ConfigError(f"--resume: {out} holds no run to resume (no {RECIPE_FILE})")
    if not resume and has_content:
        raise ConfigError(f"--output-dir {out} is not empty; pass --resume auto to continue that run "
                          f"or choose another folder")


def plan_resume(recipe: Recipe, out: Path, rerun_changed: bool) -> int | None:
    """The first stage whose folder ran with other settings than the recipe's (None: every stage
    on disk matches). Without `rerun_changed` such a stage is an error naming the changed keys."""
    memo: dict = {}
    for index, stage in enumerate(recipe.stages):
        recorded = fingerprint.read_recorded(stage_dir(out, index, stage.name))
        if recorded is None or fingerprint.matches(recorded, recipe, index, memo):
            continue  # not started, same settings, or an older run that recorded none
        if rerun_changed:
            return index
        keys = fingerprint.changed_keys(fingerprint.without_run_only(recorded.get("settings", {})),
                                        fingerprint.stage_settings(recipe, index), index)
        raise ConfigError(f"--resume: stage {index} {stage.name} ran with other settings "
                          f"({'; '.join(keys[:4]) or 'unknown'}{'; ...' if len(keys) > 4 else ''}); "
                          "resume with the settings it ran with, or pass --rerun-changed to re-run it "
                          "and every stage after it")
    return None


def open_run(recipe: Recipe, out: Path, resume: bool, rerun_changed: bool = False) -> None:
    """Main process: check the folder, take its lock, clear stages to re-run, write recipe.yaml.
    On an error the lock is released and nothing in the folder has changed."""
    check_output_dir(out, resume)
    created = not out.exists()
    lock.acquire(out)
    try:
        first = plan_resume(recipe, out, rerun_changed) if resume else None
    except BaseException:
        lock.release(out)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    if first is not None:
        for index in range(first, len(recipe.stages)):
            sdir = stage_dir(out, index, recipe.stages[index].name)
            if sdir.is_dir():
                print(f"[rlvr run] --rerun-changed: removing {sdir} (re-run with the new settings)", flush=True)
                shutil.rmtree(sdir)
    (out / RECIPE_FILE).write_text(yaml.safe_dump(recipe.raw, sort_keys=False))


def run_recipe(recipe: Recipe, output_dir: str | Path, resume: bool = False,
               rerun_changed: bool = False) -> dict:
    """Run every stage of `recipe` into `output_dir`; returns the summary (also summary.json)."""
    from accelerate import PartialState

    from rlvr.trainer.distributed import use_cpu_processes

    state = PartialState(cpu=use_cpu_processes())  # several CPU processes: gloo
    out = Path(output_dir)
    error = None
    if state.is_main_process:
        try:
            open_run(recipe, out, resume, rerun_changed)
        except ConfigError as e:
            error = e
    # the other processes learn the main one's verdict instead of waiting on it forever
    message = _from_main(state, None if error is None else str(error))
    if error is not None:
        raise error
    if message is not None:
        raise ConfigError(message)
    try:
        return _run_stages(recipe, out, resume, state)
    finally:
        if state.is_main_process:
            lock.release(out)


def _run_stages(recipe: Recipe, out: Path, resume: bool, state) -> dict:
    started = time.time()
    for index, stage in enumerate(recipe.stages):
        sdir = stage_dir(out, index, stage.name)
        if (sdir / DONE_FILE).is_file():
            _say(state, f"stage {index} {stage.name} already finished with these settings; skipped")
            continue
        _run_stage(recipe, out, index, sdir, resume, state)
        if state.is_main_process:
            write_run_files(recipe, out, time.time() - started)
        state.wait_for_everyone()
    if state.is_main_process:
        write_run_files(recipe, out, time.time() - started)
    state.wait_for_everyone()  # the summary is complete before any process reads it
    return json.loads((out / "summary.json").read_text())


def _from_main(state, value):
    """`value` as the main process has it, on every process."""
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


def _run_stage(recipe: Recipe, out: Path, index: int, sdir: Path, resume: bool, state) -> None:
    stage = recipe.stages[index]
    interrupted = sdir.is_dir()
    state.wait_for_everyone()  # every process has looked before the main one creates it
    if state.is_main_process:
        sdir.mkdir(parents=True, exist_ok=True)
        fingerprint.record(sdir, recipe, index)  # what this folder's checkpoints were made with
    state.wait_for_everyone()
    ctx = StageContext(
        recipe=recipe, stage=stage, index=index, stage_dir=sdir,
        model_dir=_model_dir(recipe, out, stage.model_from),
        dataset_dir=_dataset_dir(recipe, out, stage.dataset_from),
        resume=resume and interrupted, device=state.device, is_main=state.is_main_process,
    )
    _say(state, f"stage {index} {stage.name} ({stage.type}){' resuming' if ctx.resume else ''}")
    t0 = time.time()
    metrics = stage_kind(stage.type).run(ctx, stage.options)
    seconds = time.time() - t0
    _say(state, f"stage {index} {stage.name} done in {seconds:.1f}s: {_short(metrics)}")
    if state.is_main_process:
        done = {"index": index, "name": stage.name, "type": stage.type, "seconds": seconds,
                "metrics": metrics}
        tmp = sdir / f"{DONE_FILE}.tmp"
        tmp.write_text(json.dumps(done, indent=1, default=float))
        os.replace(tmp, sdir / DONE_FILE)  # written last: its presence means the stage is complete
    state.wait_for_everyone()


def _say(state, message: str) -> None:
    if state.is_main_process:  # one line per event, not one per process
        print(f"[rlvr run] {message}", flush=True)


def _model_dir(recipe: Recipe, out: Path, model_from: str) -> Path | None:
    if model_from == BASE:
        return None
    i = next(i for i, s in enumerate(recipe.stages) if s.name == model_from)
    return stage_dir(out, i, model_from) / MODEL_DIR


def _dataset_dir(recipe: Recipe, out: Path, dataset_from: str | None) -> Path | None:
    if dataset_from in (None, GENERATOR):
        return None
    i = next(i for i, s in enumerate(recipe.stages) if s.name == dataset_from)
    return stage_dir(out, i, dataset_from) / DATASET_DIR


def _short(metrics: dict) -> str:
    keys = [k for k in metrics if not isinstance(metrics[k], (list, dict))][:6]
    return ", ".join(f"{k}={metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}"
                     for k in keys)
