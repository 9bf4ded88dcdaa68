"""A durable on-disk queue of records: what the uploader has taken but not yet delivered.

Each record is one file, ``<seq>-<id>.rec``: a 4-byte big-endian header length, a JSON
header, then the payload. ``put`` writes it under a temporary name, fsyncs the file, renames
it and fsyncs the folder, so once ``put`` returns the record survives a crash or a kill -9.
The record's ``id`` (a UUID made at ``put``) is its idempotency key: a record sent again after
a restart carries the same key, and the server keeps one copy.

Disk use is capped at ``max_bytes``: when a new record would pass the cap, the **oldest**
records are deleted first (the freshest data is the most useful) and counted as dropped; a
record larger than the cap on its own is dropped instead. ``.tmp`` files left by a crash
mid-write were never taken and are removed when the spool opens.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import struct
import threading
import uuid
from pathlib import Path
from typing import Any

__all__ = ["Record", "Spool"]

_SUFFIX = ".rec"


@dataclasses.dataclass(frozen=True)
class Record:
    """One spooled record: its file, idempotency key, header and payload."""

    path: Path
    id: str
    header: dict[str, Any]
    payload: bytes


class Spool:
    """Records in ``folder``, oldest first; thread-safe (a producer and a sender)."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.folder = folder
        self.max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True)
        # One writer per spool: a second uploader on the same folder would send records twice
        # as fast as it deletes them. The lock dies with the process, even on kill -9.
        self._lock_fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            holder = (folder / ".lock").read_text().strip() or "another process"
            raise RuntimeError(
                f"spool {folder} is in use by process {holder}: give each uploader its own spool"
            ) from None
        os.ftruncate(self._lock_fd, 0)
        os.write(self._lock_fd, str(os.getpid()).encode())
        self._lock = threading.Lock()
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        self._sizes: dict[Path, int] = {p: p.stat().st_size for p in self._files()}
        self._next = 1 + max((self._seq_of(p) for p in self._sizes), default=0)
        self.dropped = 0
        self.unreadable = 0  # of the dropped: records that could not be read back
        self._in_flight: Path | None = None  # being sent: never dropped to make room

    def _files(self) -> list[Path]:
        return sorted(self.folder.glob(f"*{_SUFFIX}"), key=self._seq_of)

    @staticmethod
    def _seq_of(path: Path) -> int:
        try:
            return int(path.name.split("-", 1)[0])
        except ValueError:
            return 0

    @property
    def backlog(self) -> int:
        """Records waiting."""
        with self._lock:
            return len(self._sizes)

    @property
    def bytes_used(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def put(self, header: dict[str, Any], payload: bytes) -> tuple[str, int]:
        """Store a record durably; returns ``(record id, records dropped to make room)``."""
        record_id = str(uuid.uuid4())
        head = json.dumps({**header, "id": record_id}, separators=(",", ":")).encode()
        blob = struct.pack(">I", len(head)) + head + payload
        with self._lock:
            if len(blob) > self.max_bytes:
                self.dropped += 1
                return record_id, 1
            dropped = self._make_room(len(blob))
            seq = self._next
            self._next += 1
        path = self.folder / f"{seq:020d}-{record_id}{_SUFFIX}"
        tmp = self.folder / f".{path.name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self._fsync_folder()
        with self._lock:
            self._sizes[path] = len(blob)
        return record_id, dropped

    def _make_room(self, size: int) -> int:
        dropped = 0
        used = sum(self._sizes.values())
        for path in sorted(self._sizes, key=self._seq_of):
            if used + size <= self.max_bytes:
                break
            if path == self._in_flight:
                continue
            used -= self._sizes.pop(path)
            path.unlink(missing_ok=True)
            dropped += 1
        self.dropped += dropped
        return dropped

    def _fsync_folder(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def oldest(self) -> Record | None:
        """The oldest record, or None when empty; it stays in the spool (and is never dropped
        for room) until :meth:`remove`."""
        while True:
            with self._lock:
                if not self._sizes:
                    return None
                path = min(self._sizes, key=self._seq_of)
                self._in_flight = path
            try:
                blob = path.read_bytes()
            except FileNotFoundError:
                with self._lock:
                    self._sizes.pop(path, None)
                continue
            try:
                (n,) = struct.unpack(">I", blob[:4])
                header = json.loads(blob[4 : 4 + n])
                return Record(path, str(header["id"]), header, blob[4 + n :])
            except (struct.error, ValueError, KeyError, TypeError):
                # Unreadable (a disk error; put() never leaves half a record): drop, counted.
                with self._lock:
                    self._sizes.pop(path, None)
                    self._in_flight = None
                    self.dropped += 1
                    self.unreadable += 1
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the spool's lock (records stay for the next run)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def remove(self, record: Record) -> bool:
        """Delete a delivered record; False if the cap had dropped it already."""
        with self._lock:
            present = self._sizes.pop(record.path, None) is not None
            self._in_flight = None
        record.path.unlink(missing_ok=True)
        return present
