"""Worker processes that run slow checks under a hard deadline, callable from any thread.

Each worker is a plain subprocess (`python -m verifiers._worker`), not a fork of the caller: a
training process has CUDA state and many threads, which fork does not copy safely, and
multiprocessing's spawn/forkserver would re-import the caller's main script in every worker.
A worker past its deadline is SIGKILLed and replaced; one that crashes or runs out of memory
(RLIMIT_AS) is replaced too. Either way its item gets score 0 with the reason.
"""
from __future__ import annotations

import atexit
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

from verifiers import framing
from verifiers.result import zero

DEFAULT_MEMORY_LIMIT_MB = 4096
STARTUP_TIMEOUT_S = 120.0
"""Generous: importing sympy on two busy cores can take seconds; a hung start is still bounded."""
MAX_IDLE_WORKERS = 8


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class _Worker:
    """One worker subprocess and the item it is working on."""

    def __init__(self, memory_limit_mb: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "verifiers._worker", str(memory_limit_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_worker_env(),
            start_new_session=True,  # a Ctrl-C in the terminal goes to the caller, not the workers
        )
        self.ready = False
        self.started = time.monotonic()
        self.item: int | None = None
        self.deadline = 0.0

    @property
    def fd(self) -> int:
        return self.proc.stdout.fileno()

    def send(self, index: int, task: dict, timeout_s: float) -> None:
        self.item, self.deadline = index, time.monotonic() + timeout_s
        self.proc.stdin.write(framing.encode(task))
        self.proc.stdin.flush()

    def receive(self) -> dict | None:
        return framing.read_frame(self.fd)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def exit_description(self) -> str:
        code = self.proc.wait()
        if code < 0:
            return f"crashed: worker killed by {signal.Signals(-code).name}"
        return f"crashed: worker exited with code {code}"


def _worker_env() -> dict[str, str]:
    # The worker must import what the caller can (a user's module that registers a kind).
    paths = [os.path.abspath(p or os.getcwd()) for p in sys.path]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


@dataclass
class _Batch:
    tasks: list[dict]
    timeout_s: float
    results: list[dict | None]
    pending: deque


class WorkerPool:
    """Reusable workers; `map` checks out as many as it needs and returns them afterwards."""

    def __init__(self, memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB) -> None:
        self.memory_limit_mb = memory_limit_mb
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def map(self, tasks: list[dict], timeout_s: float, workers: int) -> list[dict]:
        """Run every task; result dicts (VerifyResult fields) in input order.

        `timeout_s` bounds each item from the moment it is handed to a worker.
        """
        if not tasks:
            return []
        batch = _Batch(tasks, timeout_s, [None] * len(tasks), deque(range(len(tasks))))
        crew = self._checkout(min(workers, len(tasks)))
        try:
            self._drive(batch, crew)
        finally:
            self._checkin(crew)
        return batch.results  # type: ignore[return-value]

    def _drive(self, batch: _Batch, crew: list[_Worker]) -> None:
        selector = selectors.DefaultSelector()
        for worker in crew:
            selector.register(worker.fd, selectors.EVENT_READ, worker)
        try:
            while batch.pending or any(w.item is not None for w in crew):
                for worker in list(crew):
                    if worker.ready and worker.item is None and batch.pending:
                        self._dispatch(worker, batch, crew, selector)
                wait = max(0.0, min(_deadline(w) for w in crew) - time.monotonic())
                for key, _ in selector.select(timeout=wait):
                    self._on_readable(key.data, batch, crew, selector)
                for worker in list(crew):
                    if time.monotonic() > _deadline(worker):
                        self._on_overdue(worker, batch, crew, selector)
        finally:
            selector.close()

    def _dispatch(self, worker: _Worker, batch: _Batch, crew: list[_Worker], selector) -> None:
        index = batch.pending.popleft()
        try:
            worker.send(index, batch.tasks[index], batch.timeout_s)
        except (BrokenPipeError, ValueError):  # it died while idle (it leaves after an OOM)
            worker.item = None
            batch.pending.appendleft(index)
            self._replace(worker, crew, selector)

    def _on_readable(self, worker: _Worker, batch: _Batch, crew: list[_Worker], selector) -> None:
        frame = worker.receive()
        if frame is None:  # the worker died: crash, out of memory, or its own exit after OOM
            if worker.item is not None:
                batch.results[worker.item] = zero(worker.exit_description()).to_dict()
            elif not worker.ready:
                raise RuntimeError(f"verifier worker failed to start ({worker.exit_description()})")
            self._replace(worker, crew, selector)
        elif "ready" in frame:
            worker.ready = True
        else:
            batch.results[worker.item] = frame["result"]
            worker.item = None
            if frame.get("retire"):
                self._replace(worker, crew, selector)

    def _on_overdue(self, worker: _Worker, batch: _Batch, crew: list[_Worker], selector) -> None:
        if worker.item is None:
            raise RuntimeError(f"verifier worker did not start within {STARTUP_TIMEOUT_S:g} s")
        reason = f"timeout: no verdict within {batch.timeout_s:g} s"
        batch.results[worker.item] = zero(reason).to_dict()
        self._replace(worker, crew, selector)

    def _replace(self, worker: _Worker, crew: list[_Worker], selector) -> None:
        selector.unregister(worker.fd)
        worker.kill()
        fresh = _Worker(self.memory_limit_mb)
        crew[crew.index(worker)] = fresh
        selector.register(fresh.fd, selectors.EVENT_READ, fresh)

    def _checkout(self, count: int) -> list[_Worker]:
        with self._lock:
            if os.getpid() != self._pid:  # we are a fork of the pool's owner: its workers are not ours
                self._idle, self._pid = [], os.getpid()
            alive, dead = [], []
            for worker in self._idle:
                (alive if worker.proc.poll() is None else dead).append(worker)
            self._idle = alive
            crew = [self._idle.pop() for _ in range(min(count, len(self._idle)))]
        for worker in dead:
            worker.kill()  # reaps it and closes its pipes
        crew += [_Worker(self.memory_limit_mb) for _ in range(count - len(crew))]
        return crew

    def _checkin(self, crew: list[_Worker]) -> None:
        keep = []
        for worker in crew:
            # A worker still busy here was abandoned by an exception (e.g. KeyboardInterrupt).
            if worker.item is not None or worker.proc.poll() is not None:
                worker.kill()
            else:
                keep.append(worker)
        with self._lock:
            self._idle.extend(keep)
            surplus = self._idle[MAX_IDLE_WORKERS:]
            del self._idle[MAX_IDLE_WORKERS:]
        for worker in surplus:
            worker.kill()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        if os.getpid() == self._pid:
            for worker in idle:
                worker.kill()


def _deadline(worker: _Worker) -> float:
    if worker.item is not None:
        return worker.deadline
    if not worker.ready:
        return worker.started + STARTUP_TIMEOUT_S
    return float("inf")


_POOL: WorkerPool | None = None
_POOL_LOCK = threading.Lock()


def shared_pool() -> WorkerPool:
    """The process-wide pool (created on first use, closed at exit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = WorkerPool()
            atexit.register(_POOL.close)
        return _POOL
