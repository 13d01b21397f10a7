"""Checkpoints that survive a crash mid-write, and exact resume.

Layout of `<output_dir>/checkpoints/step-XXXXXXXX/`:

    model/                   save_policy output (safetensors; transformers/peft load it as is)
    trainable.safetensors    the trainable parameters, exactly (what resume loads)
    optimizer.pt             optimizer state_dict   (torch.save; read with weights_only=True)
    scheduler.pt             lr scheduler state_dict
    task.pt                  the task source's state_dict (stream position)
    rng/rank-<p>.pt          python, numpy, torch and CUDA RNG states of process p
    trainer_state.json       step, non-finite streak, world size, last metrics
    manifest.json            every other file's relative path, size and (small files) sha256

Everything is written into `checkpoints/.tmp-step-XXXXXXXX/` and renamed into place with one
`os.replace`, the commit point: a process killed while writing leaves only a `.tmp-*` folder,
which resume ignores (and the next save removes). Nothing is unpickled beyond tensors and plain
containers (`torch.load(weights_only=True)`).

The manifest is written last, so it catches what the rename cannot: a file truncated or damaged
after the commit (a full disk, a bad copy). `resume="auto"` skips a checkpoint that does not match
its manifest or does not read back, with a warning, and takes the previous one.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
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
from rlvr.trainer.metrics import reduce_sum

STEP_DIR = re.compile(r"^step-(\d{8})$")
STATE_FILE = "trainer_state.json"
MANIFEST = "manifest.json"
HASH_LIMIT = 64 << 20
"""Files up to this size get a sha256 in the manifest; larger ones (model weights) only a size."""


class CheckpointDiskFullError(OSError):
    """A checkpoint could not be written for lack of disk space; the partial folder is removed."""


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
    """`auto` -> the newest checkpoint under `root` that matches its manifest (None when there is
    none; each one skipped is warned about); a path -> that checkpoint, which must be complete."""
    if resume is None:
        return None
    return next(iter(candidates(resume, root)), None)


def candidates(resume: str | os.PathLike, root: Path):
    """The checkpoints to try, newest first: those of `root` that pass `check` for `auto`, else the
    one path, which must pass."""
    if str(resume) != "auto":
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"resume: {path} is not a complete checkpoint (no {STATE_FILE})")
        problem = check(path)
        if problem:
            raise ValueError(f"resume: {path} is damaged: {problem}")
        yield path
        return
    for _, path in reversed(list_checkpoints(root)):
        problem = check(path)
        if problem:
            warn_skipped(path, problem)
        else:
            yield path


def warn_skipped(path: Path, problem: str) -> None:
    warnings.warn(f"resume: skipping {path}: {problem}; trying the previous checkpoint")


# ----------------------------------------------------------------------------- manifest

def write_manifest(path: Path) -> None:
    """Record every file under `path` (relative path, size, sha256 up to HASH_LIMIT), durably."""
    files = {}
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST):
        entry = {"size": f.stat().st_size}
        if entry["size"] <= HASH_LIMIT:
            entry["sha256"] = _sha256(f)
        files[f.relative_to(path).as_posix()] = entry
    target = path / MANIFEST
    target.write_text(json.dumps({"files": files}, indent=1))
    _fsync(target)


def check(path: Path) -> str | None:
    """Why checkpoint `path` cannot be trusted, or None. One written before manifests existed
    (its trainer_state.json does not say it has one) passes here; reading its files decides."""
    if not (path / MANIFEST).exists():
        try:
            raw = json.loads((path / STATE_FILE).read_text())
        except (OSError, ValueError) as e:
            return f"{STATE_FILE} is unreadable ({e})"
        return f"{MANIFEST} is missing" if isinstance(raw, dict) and raw.get("manifest") else None
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{MANIFEST} is unreadable ({e!r})"
    for rel, entry in files.items():
        f = path / rel
        if not f.is_file():
            return f"{rel} is missing"
        size = f.stat().st_size
        if size != entry["size"]:
            return f"{rel} is {size} bytes, the manifest says {entry['size']}"
        if "sha256" in entry and _sha256(f) != entry["sha256"]:
            return f"{rel} does not match its sha256"
    return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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

    def clean_staging(self) -> None:
        """Remove folders a killed or failed save left behind (main process). Collective."""
        if self.acc.is_main_process and self.root.is_dir():
            for p in self.root.iterdir():
                if p.is_dir() and p.name.startswith((".tmp-", ".old-")):
                    shutil.rmtree(p, ignore_errors=True)
        self.acc.wait_for_everyone()

    def save(self, step: int, **parts) -> Path:
        """Write checkpoint `step` from `parts` (model, policy, save_policy, optimizer, scheduler,
        task, state); returns its final path. Collective: all processes call it. A failed write
        leaves no partial folder and the previous checkpoints untouched."""
        acc = self.acc
        tmp = self.root / f".tmp-{step_dir_name(step)}"
        final = self.root / step_dir_name(step)
        try:
            self._write(tmp, **parts)
        except Exception as e:  # safetensors raises its own SafetensorError on I/O errors
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            if _disk_full(e):
                raise CheckpointDiskFullError(
                    f"checkpoint of step {step}: no space left on device while writing {tmp}; the "
                    f"partial folder was removed, the last good checkpoint is kept "
                    f"({self._newest() or 'none yet'}). Free space (or lower keep_last) and resume") from e
            raise
        if acc.is_main_process:
            if final.exists():  # re-saving a step after resuming from an older checkpoint
                old = self.root / f".old-{step_dir_name(step)}"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                shutil.rmtree(old)
            os.replace(tmp, final)  # the commit point
            self._prune()
        acc.wait_for_everyone()
        return final

    def _write(self, tmp: Path, *, model, policy, save_policy, optimizer, scheduler, task,
               state: TrainerState) -> None:
        acc = self.acc
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
            # "manifest": a checkpoint that says so and lacks manifest.json is damaged, not old
            saved = {**dataclasses.asdict(state), "manifest": True}
            (tmp / STATE_FILE).write_text(json.dumps(saved, indent=1, default=float))
        acc.wait_for_everyone()
        if acc.is_main_process:
            _fsync_tree(tmp)
            write_manifest(tmp)  # last, over every process's files, once they are on disk

    def _newest(self) -> Path | None:
        found = list_checkpoints(self.root)
        return found[-1][1] if found else None

    def resume(self, resume, *, model, optimizer, scheduler, task) -> TrainerState | None:
        """Restore the checkpoint `resume` names (None, "auto" or a path); None when there is none.
        `auto` falls back to the previous checkpoint when one is damaged or does not read back;
        every process takes the same decision."""
        if resume is None:
            return None
        for path in candidates(resume, self.root):
            try:
                saved, problem = self._read(path), None
            except Exception as e:  # noqa: BLE001 - any failure to read means damaged content
                saved, problem = None, f"it does not read back ({type(e).__name__}: {e})"
            (failed,) = reduce_sum(self.acc, [0.0 if problem is None else 1.0])
            if failed:
                problem = problem or "another process could not read it"
                if str(resume) != "auto":
                    raise ValueError(f"resume: {path} is damaged: {problem}")
                warn_skipped(path, problem)
                continue
            return self._apply(path, saved, model=model, optimizer=optimizer, scheduler=scheduler, task=task)
        return None

    def _read(self, path: Path) -> "_Saved":
        """Everything this process needs from `path`, read into memory before anything changes,
        so a file that does not read back leaves the model and optimizer untouched."""
        acc = self.acc
        raw = json.loads((path / STATE_FILE).read_text())
        state = TrainerState(**{f.name: raw[f.name] for f in dataclasses.fields(TrainerState) if f.name in raw})
        whole = not distributed.shards_training_state(acc)  # sharded engines read engine/ themselves
        rng_file = path / "rng" / f"rank-{acc.process_index}.pt"
        same_world = rng_file.is_file() and state.world_size == acc.num_processes
        return _Saved(
            state=state,
            trainable=load_file(str(path / "trainable.safetensors")) if whole else None,
            optimizer=torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu") if whole else None,
            scheduler=torch.load(path / "scheduler.pt", weights_only=True),
            task=torch.load(path / "task.pt", weights_only=True),
            rng=torch.load(rng_file, weights_only=True) if same_world else None,
        )

    def _apply(self, path: Path, saved: "_Saved", *, model, optimizer, scheduler, task) -> TrainerState:
        acc, state = self.acc, saved.state
        if saved.trainable is None:
            distributed.load_sharded_training_state(acc, path, state.world_size)  # ZeRO/FSDP: engine/
        else:
            _load_trainable(acc.unwrap_model(model), saved.trainable, path)
            optimizer.load_state_dict(saved.optimizer)
        scheduler.load_state_dict(saved.scheduler)
        task.load_state_dict(saved.task)
        if saved.rng is not None:
            set_rng_state(saved.rng)
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


@dataclass
class _Saved:
    """A checkpoint read into memory (see Checkpointer._read)."""

    state: TrainerState
    trainable: dict | None
    optimizer: dict | None
    scheduler: dict
    task: dict
    rng: dict | None


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


def _disk_full(e: BaseException | None) -> bool:
    """ENOSPC anywhere in the exception chain; torch.save on a full disk raises RuntimeErrors
    that only say where the zip writer stopped."""
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        text = str(e)
        if any(m in text for m in ("unexpected pos", "PytorchStreamWriter failed", "No space left on device")):
            return True
        e = e.__cause__ or e.__context__
    return False


def _fsync_tree(root: Path) -> None:
    """Flush file contents to disk before the rename makes the checkpoint visible."""
    for dirpath, _, files in os.walk(root):
        for f in files:
            _fsync(Path(dirpath) / f)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
