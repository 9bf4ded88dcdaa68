"""Output files that survive: checks at ``open()``, and a new file that replaces the old one
only once it holds something.

Every file sink (jsonl, snapshot, video writer) checks at ``open()`` that it can write where
it was told to (:func:`writable_folder`, :func:`writable_file`), so a bad path fails before
any frame flows. A sink that replaces a file writes the new one under a hidden partial name
beside it (:func:`partial_path`) and moves it over the old one (:func:`publish`) only once
the run has produced something: a graph that fails to start, or stops before its first
output, leaves the previous run's file as it was. :func:`fsync_folder` makes a rename
survive a power cut; a file's own data is made durable with ``os.fsync`` by each sink, on
the policy it documents.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["fsync_folder", "partial_path", "publish", "writable_file", "writable_folder"]


def writable_folder(folder: str | Path, *, node_id: str, param: str) -> Path:
    """Create ``folder`` if needed and check that a file can be written in it.

    The check writes and removes a temporary file: permission bits alone do not tell (root
    ignores them, and a read-only mount ignores root).

    Raises:
        OSError: naming the node, the folder and the param to change.
    """
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OSError(
            exc.errno,
            f"node {node_id!r} cannot write in the folder {str(path)!r} ({reason}); "
            f"set {param!r} to a folder it may create and write",
        ) from None
    return path


def writable_file(file: str | Path, *, node_id: str, param: str) -> Path:
    """Check that ``file`` can be written: its folder is writable and it is not a folder."""
    path = Path(file)
    writable_folder(path.parent, node_id=node_id, param=param)
    if path.is_dir():
        raise IsADirectoryError(
            f"node {node_id!r}: {param} {str(path)!r} is a folder; give a file path"
        )
    return path


def partial_path(path: Path) -> Path:
    """The hidden name a new ``path`` is written under until :func:`publish`: ``.name.partial``
    in the same folder (so the rename is atomic: one file system)."""
    return path.with_name(f".{path.name}.partial")


def fsync_folder(folder: Path) -> None:
    """Make the folder's entries (a rename, a new file) durable; a no-op where folders cannot
    be opened for it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish(partial: Path, path: Path) -> None:
    """Move ``partial`` over ``path`` in one step, and make the rename durable.

    An open handle on ``partial`` keeps writing to the same file, now named ``path``.
    """
    os.replace(partial, path)
    fsync_folder(path.parent)
