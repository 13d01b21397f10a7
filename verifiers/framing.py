"""Length-prefixed JSON frames over pipes: the protocol between the pool and its workers.

JSON rather than pickle: a frame coming back from a worker that ran on model output is data, and
unpickling data can run code.
"""
from __future__ import annotations

import json
import os
import struct

_HEADER = struct.Struct(">I")


def encode(message: dict) -> bytes:
    body = json.dumps(message, ensure_ascii=False).encode()
    return _HEADER.pack(len(body)) + body


def write_frame(fd: int, message: dict) -> None:
    view = memoryview(encode(message))
    while view:
        view = view[os.write(fd, view) :]


def read_frame(fd: int) -> dict | None:
    """The next frame, or None at end of file (the other side is gone)."""
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    body = _read_exactly(fd, _HEADER.unpack(header)[0])
    return None if body is None else json.loads(body)


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
