"""One owner per run folder: `<out>/.lock` holds the owner's pid, host and start time.

Taken with O_CREAT|O_EXCL (atomic on a local or NFSv3+ file system). A lock whose process is gone
(same host, pid not alive) is stale: it is taken over with a one-line warning. A live owner, or an
owner on another host (whose pid cannot be checked from here), refuses the second run.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from rlvr.config import ConfigError

LOCK_FILE = ".lock"


class RunLocked(ConfigError):
    """Another live process owns the run folder."""


def read_owner(out: Path) -> dict | None:
    """The lock's content, None without a lock; an unreadable lock (killed mid-write) reads as {}."""
    try:
        text = (Path(out) / LOCK_FILE).read_text()
    except FileNotFoundError:
        return None
    try:
        owner = json.loads(text)
        return owner if isinstance(owner, dict) else {}
    except json.JSONDecodeError:
        return {}


def is_live(owner: dict) -> bool:
    """True when the owner's process may still be running (unknown hosts count as live)."""
    pid, host = owner.get("pid"), owner.get("host")
    if not isinstance(pid, int):
        return False  # half-written lock: its writer died before finishing it
    if host != socket.gethostname():
        return True
    if pid == os.getpid():
        return False  # this process: a lock left by an earlier run in it that did not release
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def check_not_locked(out: Path) -> None:
    """Raise `RunLocked` when a live process owns `out` (looks only; takes nothing)."""
    owner = read_owner(out)
    if owner is not None and is_live(owner):
        raise RunLocked(_owned_message(out, owner))


def acquire(out: Path) -> Path:
    """Take the lock of `out` (creating the folder); returns the lock path. Raises `RunLocked`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    for _ in range(3):  # a stale lock removed, or a race with another starter
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = read_owner(out)
            if owner is None:
                continue  # released between our open and our read
            if is_live(owner):
                raise RunLocked(_owned_message(out, owner)) from None
            print(f"[rlvr run] warning: taking over the stale lock of {out} (process "
                  f"{owner.get('pid', '?')} on {owner.get('host', '?')} is gone)", file=sys.stderr, flush=True)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, f)
        return path
    raise RunLocked(f"{out}: could not take the run lock {path}; another run is starting there")


def release(out: Path) -> None:
    """Drop the lock of `out` if this process holds it."""
    owner = read_owner(out)
    if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        (Path(out) / LOCK_FILE).unlink(missing_ok=True)


def _owned_message(out: Path, owner: dict) -> str:
    return (f"{out} is in use by another run (process {owner.get('pid', '?')} on "
            f"{owner.get('host', '?')}, started {owner.get('started', '?')}); wait for it or stop it, "
            f"or choose another --output-dir")
