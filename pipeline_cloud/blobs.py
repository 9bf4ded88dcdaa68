"""The blob folder: uploaded files and model files, one file per blob, written durably.

A blob is written to a temporary file in the same folder, fsynced, renamed into place and
the folder fsynced, so after ``put`` returns the bytes survive a crash or power loss; the
database row that names the blob is committed only after that. Keys are random ids (never
user input), spread over 256 sub-folders so no folder grows huge.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["BlobStore"]


class BlobStore:
    """Blobs under ``root``: ``put(data) -> key``, ``path(key)``, ``get(key)``, ``delete(key)``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """Where the blob ``key`` lives (it may not exist)."""
        if not key or "/" in key or "\\" in key or key.startswith("."):
            raise ValueError(f"invalid blob key {key!r}")
        return self.root / key[:2] / key

    def put(self, data: bytes, suffix: str = "") -> str:
        """Store ``data`` durably and return its new key."""
        key = uuid.uuid4().hex + suffix
        target = self.path(key)
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f".{key}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        return key

    def get(self, key: str) -> bytes:
        """The bytes of blob ``key`` (``FileNotFoundError`` if it is gone)."""
        return self.path(key).read_bytes()

    def delete(self, key: str) -> None:
        """Remove blob ``key``; a missing blob is not an error."""
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
