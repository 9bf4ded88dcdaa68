"""Checks a node declares on its params: what would fail in the first second of a run.

A node type overrides ``Node.check(params)`` and returns ``ParamIssue`` s naming the param at
fault; ``pipeline check`` (and ``pipeline run`` before it starts anything) reports each at that
param's ``file:line:col``. The checker knows no node types: only this hook. The helpers
below are the usual checks (an input file exists, an output can be written, a port is free)::

    @classmethod
    def check(cls, params: Params) -> Iterable[ParamIssue]:
        yield from input_file("path", params.path, "video file")

Relative paths are relative to the current folder, as in the node processes.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

__all__ = ["ParamIssue", "input_file", "input_folder", "output_path", "port_in_use"]


@dataclasses.dataclass(frozen=True)
class ParamIssue:
    """One problem with a param, found before the run.

    Attributes:
        param: the param's name (dotted for a nested value: ``decoder_params.iou``).
        message: what is wrong (without the node id: the checker adds it).
        hints: lines that say what to do.
        severity: ``error`` (``pipeline check`` exits 2) or ``warning``.
    """

    param: str
    message: str
    hints: tuple[str, ...] = ()
    severity: Literal["error", "warning"] = "error"


def _relative_note(path: Path) -> tuple[str, ...]:
    if path.is_absolute():
        return ()
    return (f"relative paths are from the current folder, {os.getcwd()}",)


def input_file(param: str, value: str, what: str = "file") -> Iterator[ParamIssue]:
    """An error unless ``value`` is an existing file (``~`` expanded)."""
    path = Path(value).expanduser()
    if path.is_file():
        return
    if path.is_dir():
        yield ParamIssue(param, f"{value!r} is a folder, not a {what}")
    else:
        yield ParamIssue(param, f"no such {what}: {value!r}", _relative_note(path))


def input_folder(param: str, value: str, what: str = "folder") -> Iterator[ParamIssue]:
    """An error unless ``value`` is an existing folder (``~`` expanded)."""
    path = Path(value).expanduser()
    if path.is_dir():
        return
    if path.exists():
        yield ParamIssue(param, f"{value!r} is a file, not a {what}")
    else:
        yield ParamIssue(param, f"no such {what}: {value!r}", _relative_note(path))


def output_path(
    param: str, value: str, kind: Literal["file", "folder"] = "file"
) -> Iterator[ParamIssue]:
    """An error unless ``value`` can be written: its missing folders can be created."""
    path = Path(value).expanduser()
    if kind == "file" and path.is_dir():
        yield ParamIssue(param, f"{value!r} is a folder; give a file name to write")
        return
    if kind == "file" and path.exists() and not os.access(path, os.W_OK):
        yield ParamIssue(param, f"cannot write {value!r}: permission denied")
        return
    folder = path.parent if kind == "file" else path
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        yield ParamIssue(
            param,
            f"cannot create the folder {str(folder)!r}: {str(probe)!r} is a file",
            _relative_note(path),
        )
    elif not os.access(probe, os.W_OK | os.X_OK):
        yield ParamIssue(
            param,
            f"cannot write in the folder {str(probe)!r}: permission denied",
            _relative_note(path),
        )


def port_in_use(host: str, port: int) -> bool:
    """True when another program listens on ``host:port`` (port 0 is never in use)."""
    if port == 0:
        return False
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False
