"""Stopping a run cleanly on SIGTERM (schedulers, `kill`) or SIGINT (Ctrl-C): the handler only
sets a flag; the training loop finishes its step, saves a checkpoint and raises `Interrupted`."""
from __future__ import annotations

import contextlib
import signal
import threading

CAUGHT = (signal.SIGTERM, signal.SIGINT)


class Interrupted(RuntimeError):
    """The run stopped on a signal after finishing a step and writing a checkpoint."""

    def __init__(self, signum: int, step: int, checkpoint):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}; checkpoint "
                         f"{checkpoint} (continue with resume='auto' / --resume auto)")

    @property
    def exit_code(self) -> int:
        """The shell's convention for death by a signal: 143 for SIGTERM, 130 for SIGINT."""
        return 128 + self.signum


@contextlib.contextmanager
def catch_stop_signals():
    """Yields a dict whose "signum" becomes the number of the first SIGTERM/SIGINT received
    (0 until then); the previous handlers come back on exit. Handlers can only be set from the
    main thread: elsewhere nothing is caught and the defaults stay."""
    caught = {"signum": 0}
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum, frame):
        caught["signum"] = caught["signum"] or signum

    previous = {s: signal.signal(s, handler) for s in CAUGHT}
    try:
        yield caught
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)  # None: set outside Python
