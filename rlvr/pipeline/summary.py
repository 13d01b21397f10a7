"""The run-level files: metrics.jsonl (all stages), summary.json, plots.

Rebuilt from the stage folders after every stage, so a resumed run never duplicates rows and the
files always describe exactly the stages that are on disk.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from rlvr.pipeline.stages import stage_kind

DONE_FILE = "DONE.json"


def stage_rows(sdir: Path) -> list[dict]:
    path = sdir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def build_summary(recipe, out: Path, elapsed: float) -> tuple[dict, list[dict]]:
    """(summary, all metric rows tagged with their stage) from the stage folders under `out`."""
    stages, rows = [], []
    for index, stage in enumerate(recipe.stages):
        sdir = out / f"{index}-{stage.name}"
        entry = {"index": index, "name": stage.name, "type": stage.type, "model_from": stage.model_from,
                 "dataset_from": stage.dataset_from, "status": "pending"}
        if (sdir / DONE_FILE).is_file():
            done = json.loads((sdir / DONE_FILE).read_text())
            entry.update(status="done", seconds=done["seconds"], metrics=done["metrics"])
        elif sdir.is_dir():
            entry["status"] = "interrupted"
        stages.append(entry)
        rows += [{"stage": stage.name, "stage_index": index, "stage_type": stage.type, **r}
                 for r in stage_rows(sdir)]
    summary = {
        "recipe": recipe.name,
        "output_dir": str(out),
        "finished": all(s["status"] == "done" for s in stages),
        "seconds_this_session": elapsed,
        "accuracy_per_stage": {s["name"]: s["metrics"]["accuracy"] for s in stages
                               if stage_kind(s["type"]).scores_held_out and "accuracy" in s.get("metrics", {})},
        "stages": stages,
    }
    return summary, rows


def write_run_files(recipe, out: Path, elapsed: float) -> dict:
    from rlvr.pipeline.plots import write_plots

    summary, rows = build_summary(recipe, out, elapsed)
    _write_atomic(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    _write_atomic(out / "summary.json", json.dumps(summary, indent=1, default=float))
    write_plots(summary, rows, out / "plots")
    return summary


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
