"""What each node is doing right now, readable by the supervisor even when the node hangs.

A node stuck in ``process()``, ``open()`` or ``close()`` cannot say so: its one thread is the
stuck one. So every worker writes, before and after each lifecycle call, one small record
into a file of the run's private folder that the supervisor maps too (the *activity
board*): which method, which input seq, and since when (``time.monotonic_ns()``, one clock
for every process of the machine). Writing it is two ``struct.pack_into`` a call; the
supervisor reads every record on each of its 0.1 s polls, and so sees a node that has been
in the same call for too long (``pipeline.runtime.runner`` then warns, dumps the node's
stack and stops the graph).

A record is 32 bytes: method (int32), padding, seq (int64, -1 when none) and the start
(int64, ns). The reader reads a record until two reads agree, so a record caught while it
was being written is never taken for a very old call.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from pathlib import Path

__all__ = ["METHODS", "Activity", "ActivityBoard"]

METHODS = ("idle", "open", "process", "flush", "close")
_CODES = {name: i for i, name in enumerate(METHODS)}
_RECORD = struct.Struct("<iiqq")
RECORD_SIZE = 32


class ActivityBoard:
    """The supervisor's side: create the board for ``nodes`` nodes and read it."""

    def __init__(self, path: Path, nodes: int) -> None:
        self.path = path
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, max(1, nodes) * RECORD_SIZE)
            self._mm = mmap.mmap(fd, max(1, nodes) * RECORD_SIZE)
        finally:
            os.close(fd)

    def read(self, index: int) -> tuple[str, int | None, int]:
        """``(method, seq, since_ns)`` of node ``index``; ``("idle", None, 0)`` outside calls."""
        at = index * RECORD_SIZE
        record = _RECORD.unpack_from(self._mm, at)
        for _ in range(100):
            again = _RECORD.unpack_from(self._mm, at)
            if again == record:
                break
            record = again
        code, _, seq, since = record
        method = METHODS[code] if 0 <= code < len(METHODS) else "idle"
        return method, (None if seq < 0 else seq), since

    def close(self) -> None:
        self._mm.close()


class Activity:
    """A worker's side: write this node's record at the start and end of every call."""

    def __init__(self, path: str | Path, index: int) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            self._mm = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        self._at = index * RECORD_SIZE

    def _write(self, code: int, seq: int, since: int) -> None:
        _RECORD.pack_into(self._mm, self._at, code, 0, seq, since)

    def begin(self, method: str, seq: int | None = None) -> None:
        """The node enters ``method`` (on input ``seq``)."""
        self._write(_CODES[method], -1 if seq is None else seq, time.monotonic_ns())

    def end(self) -> None:
        """The node returned from its call."""
        self._write(0, -1, 0)

    def close(self) -> None:
        self._mm.close()
