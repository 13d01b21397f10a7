"""A pool worker: reads tasks as frames on stdin, answers frames on its original stdout.

Run by `verifiers.pool` as ``python -m verifiers._worker MEMORY_LIMIT_MB``. It has no timeouts of
its own (math-verify's are turned off): the pool kills it at the deadline, which works from any
thread, unlike `signal.alarm`.
"""
from __future__ import annotations

import importlib
import logging
import os
import resource
import sys
import threading
import time

from verifiers import framing
from verifiers.registry import VerifierSpec, get_verifier
from verifiers.result import VerifyResult, zero


def main() -> None:
    protocol_in, protocol_out = 0, os.dup(1)
    os.dup2(2, 1)  # stray prints (math-verify warns on stdout) must not corrupt the protocol
    limit_bytes = int(sys.argv[1]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    _exit_when_orphaned()
    _preload()
    framing.write_frame(protocol_out, {"ready": os.getpid()})
    while (task := framing.read_frame(protocol_in)) is not None:
        result, out_of_memory = _run(task)
        # After a MemoryError the heap may be damaged: retire, and the pool starts a fresh worker.
        framing.write_frame(protocol_out, {"result": result.to_dict(), "retire": out_of_memory})
        if out_of_memory:
            return


def _run(task: dict) -> tuple[VerifyResult, bool]:
    try:
        spec = _lookup(task["kind"], task.get("module"))
        return spec.check(task["completion"], task["reference"], **task["options"]), False
    except MemoryError:
        return zero("out of memory: the check exceeded the worker's memory limit"), True
    except RecursionError:
        return zero("error: expression too deeply nested"), False
    except Exception as error:  # the completion broke the checker: a zero with the reason
        return zero(f"error: {type(error).__name__}: {str(error)[:200]}"), False


def _lookup(kind: str, module: str | None) -> VerifierSpec:
    try:
        return get_verifier(kind)
    except ValueError:
        if not module:
            raise
        importlib.import_module(module)  # a user's kind registers itself on import
        return get_verifier(kind)


def _preload() -> None:
    """Import sympy and math-verify once per worker, before the first deadline starts."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import verifiers  # noqa: F401  (registers the built-in kinds)
    from verifiers.math_answer import latex_equivalent

    latex_equivalent("\\frac{1}{2}", "0.5")


def _exit_when_orphaned() -> None:
    """Leave when the pool's process dies, even while a check is computing."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


if __name__ == "__main__":
    main()
