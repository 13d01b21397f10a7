"""Checkpoints that survive a crash mid-write, and exact resume.

Layout of `<output_dir>/checkpoints/step-XXXXXXXX/`:

    model/                   save_policy output (safetensors; transformers/peft load it as is)
    trainable.safetensors    the trainable parameters, exactly (what resume loads)
    optimizer.pt             optimizer state_dict   (torch.save; read with weights_only=True)
    scheduler.pt             lr scheduler state_dict
    task.pt                  the task source's state_dict (stream position)
    rng/rank-<p>.pt          python, numpy, torch and CUDA RNG states of process p
    trainer_state.json       step, non-finite streak, world size, last metrics

Everything is written into `checkpoints/.tmp-step-XXXXXXXX/` and renamed into place with one
`os.replace`, the commit point: a process killed while writing leaves only a `.tmp-*` folder,
which resume ignores (and the next save removes). Nothing is unpickled beyond tensors and plain
containers (`torch.load(weights_only=True)`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rlvr.trainer import distributed

STEP_DIR = re.compile(r"^step-(\d{8})$")
STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    step: int = 0
    """Last completed step."""
    nonfinite_streak: int = 0
    """Consecutive skipped (non-finite) updates."""
    world_size: int = 1
    metrics: dict = field(default_factory=dict)
    """Metrics of the last completed step."""


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first (temporary folders are not listed)."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def resolve_resume(resume: str | os.PathLike | None, root: Path) -> Path | None:
    """`auto` -> the newest complete checkpoint under `root` (None when there is none); a path ->
    that checkpoint, which must be complete."""
    if resume is None:
        return None
    if str(resume) == "auto":
        found = list_checkpoints(root)
        return found[-1][1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"resume: {path} is not a complete checkpoint (no {STATE_FILE})")
    return path


# ----------------------------------------------------------------------------- RNG states

def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- save / load

class Checkpointer:
    """Saves and restores the whole training state under `root`; every process calls save/load."""

    def __init__(self, root: Path, accelerator, keep_last: int):
        self.root = Path(root)
        self.acc = accelerator
        self.keep_last = keep_last

    def save(self, step: int, *, model, policy, save_policy, optimizer, scheduler, task,
             state: TrainerState) -> Path:
        """Write checkpoint `step`; returns its final path. Collective: all processes call it."""
        acc = self.acc
        tmp = self.root / f".tmp-{step_dir_name(step)}"
        final = self.root / step_dir_name(step)
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)  # a leftover of a killed save
            (tmp / "rng").mkdir(parents=True)
        acc.wait_for_everyone()
        torch.save(rng_state(), tmp / "rng" / f"rank-{acc.process_index}.pt")
        trainable = _trainable_state(model, acc)  # collective under ZeRO-3/FSDP (gathers shards)
        distributed.save_full_policy(acc, model, policy, save_policy, tmp / "model")  # collective
        distributed.save_training_state(acc, optimizer, tmp)  # ZeRO/FSDP: engine/, every shard
        if acc.is_main_process:
            save_file(trainable, str(tmp / "trainable.safetensors"))
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            torch.save(task.state_dict(), tmp / "task.pt")
            # written last: a folder without it is never taken for a checkpoint
            (tmp / STATE_FILE).write_text(json.dumps(dataclasses.asdict(state), indent=1, default=float))
        acc.wait_for_everyone()
        if acc.is_main_process:
            _fsync_tree(tmp)
            if final.exists():  # re-saving a step after resuming from an older checkpoint
                old = self.root / f".old-{step_dir_name(step)}"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                shutil.rmtree(old)
            os.replace(tmp, final)  # the commit point
            self._prune()
        acc.wait_for_everyone()
        return final

    def load(self, path: Path, *, model, optimizer, scheduler, task) -> TrainerState:
        """Restore everything saved by `save`; returns the trainer state."""
        acc = self.acc
        state = TrainerState(**json.loads((path / STATE_FILE).read_text()))
        if not distributed.load_sharded_training_state(acc, path, state.world_size):  # ZeRO/FSDP: engine/
            _load_trainable(acc.unwrap_model(model), load_file(str(path / "trainable.safetensors")), path)
            optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        task.load_state_dict(torch.load(path / "task.pt", weights_only=True))
        rng_file = path / "rng" / f"rank-{acc.process_index}.pt"
        if rng_file.is_file() and state.world_size == acc.num_processes:
            set_rng_state(torch.load(rng_file, weights_only=True))
        else:
            warnings.warn(f"resume: checkpoint written by {state.world_size} processes, now "
                          f"{acc.num_processes}; RNG streams are reseeded, so sampling will not "
                          "repeat the interrupted run exactly")
        state.world_size = acc.num_processes  # the next checkpoint is written by this many
        return state

    def _prune(self) -> None:
        if self.keep_last <= 0:
            return
        for _, p in list_checkpoints(self.root)[: -self.keep_last]:
            shutil.rmtree(p)


def _trainable_state(model, acc) -> dict[str, torch.Tensor]:
    full = acc.get_state_dict(model)  # full weights on the main process, whatever the sharding
    names = [n for n, p in acc.unwrap_model(model).named_parameters() if p.requires_grad]
    if not acc.is_main_process:
        return {}
    missing = [n for n in names if n not in full]
    if missing:
        raise RuntimeError(f"checkpoint: trainable parameters missing from the state dict: {missing[:5]}")
    return {n: full[n].detach().to("cpu").contiguous().clone() for n in names}


def _load_trainable(model, tensors: dict[str, torch.Tensor], path: Path) -> None:
    params = dict(model.named_parameters())
    wanted = {n for n, p in params.items() if p.requires_grad}
    if set(tensors) != wanted:
        diff = sorted(set(tensors) ^ wanted)[:5]
        raise ValueError(f"resume: {path}/trainable.safetensors does not match the model's trainable "
                         f"parameters (first differences: {diff}); same model config and LoRA settings?")
    with torch.no_grad():
        for name, t in tensors.items():
            params[name].copy_(t)


def _fsync_tree(root: Path) -> None:
    """Flush file contents to disk before the rename makes the checkpoint visible."""
    for dirpath, _, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
