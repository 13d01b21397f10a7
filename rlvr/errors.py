"""Errors a user causes and can fix (bad input, a missing file, settings that cannot work).

The `rlvr` command prints these as one line on stderr and exits 2; anything else is a bug and
keeps its traceback. `--debug` shows the traceback of both.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input or settings; the message says what to change."""


class StageError(UserError, RuntimeError):
    """A recipe stage cannot go on with these settings (e.g. rejection sampling kept nothing)."""


def one_line(e: BaseException) -> str:
    """The message on one line: several errors (one per line) are joined with '; '."""
    lines = [" ".join(line.split()) for line in str(e).splitlines() if line.strip()]
    return "; ".join(lines).replace(":; ", ": ") or type(e).__name__
