"""What each node is doing right now, readable by the supervisor even when the node hangs.

A node stuck in ``process()``, ``open()`` or ``close()`` cannot say so: its one thread is the
stuck one. So every worker writes, before and after each lifecycle call, one small record
into a file of the run's private folder that the supervisor maps too (the *activity
board*): which method, which input seq, and since when (``time.monotonic_ns()``, one clock
for every process of the machine). Writing it is two ``struct.pack_into`` a call; the
supervisor reads every record on each of its 0.1 s polls, and so sees a node that has been
in the same call for too long (``pipeline.runtime.runner`` then warns, dumps the node's
stack and stops the graph).

A record is 32 bytes: a version (uint32), the method (int32), seq (int64, -1 when none) and
the start (int64, ns). It is a seqlock: the writer makes the version odd, writes, and makes
it even again; the reader takes a record only when the version was even and unchanged around
its read. A writer preempted half-way (a busy machine) is never read as a call that started
at time zero, which would look like a node stuck for as long as the machine has been up.
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
_VERSION = struct.Struct("<I")  # wraps at 2**32, an even number: odd stays odd
_BODY = struct.Struct("<iqq")  # method, seq, since
RECORD_SIZE = 32
_pack_version = _VERSION.pack_into  # twice per call of every node: no attribute look-ups
_pack_body = _BODY.pack_into
_now_ns = time.monotonic_ns


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

    def read(self, index: int) -> tuple[str, int | None, int] | None:
        """``(method, seq, since_ns)`` of node ``index`` (``("idle", None, 0)`` outside
        calls), or None when the record was being written each time it was read."""
        at = index * RECORD_SIZE
        mm = self._mm
        for _ in range(100):
            (before,) = _VERSION.unpack_from(mm, at)
            if before % 2:
                continue
            code, seq, since = _BODY.unpack_from(mm, at + 4)
            (after,) = _VERSION.unpack_from(mm, at)
            if before == after:
                if not 0 < code < len(METHODS) or since <= 0:
                    return "idle", None, 0
                return METHODS[code], (None if seq < 0 else seq), since
        return None

    def clear(self, index: int) -> None:
        """Node ``index`` is idle (before a restarted node's first record: the dead one's
        last call must not look like a call of the new one)."""
        at = index * RECORD_SIZE
        _BODY.pack_into(self._mm, at + 4, 0, -1, 0)
        _VERSION.pack_into(self._mm, at, 0)

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
        self._version = 0

    def _write(self, code: int, seq: int, since: int) -> None:
        mm, at = self._mm, self._at
        version = (self._version + 1) & 0xFFFFFFFF  # odd: being written
        _pack_version(mm, at, version)
        _pack_body(mm, at + 4, code, seq, since)
        self._version = version = (version + 1) & 0xFFFFFFFF  # even: whole
        _pack_version(mm, at, version)

    def begin(self, method: str, seq: int | None = None) -> None:
        """The node enters ``method`` (on input ``seq``)."""
        self._write(_CODES[method], -1 if seq is None else seq, _now_ns())

    def end(self) -> None:
        """The node returned from its call."""
        self._write(0, -1, 0)

    def close(self) -> None:
        self._mm.close()
