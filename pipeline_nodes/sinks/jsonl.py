"""A sink that writes one JSON line per message, with size-based rotation.

:func:`message_record` turns any message into a JSON-ready dict: Detections and
Classifications as lists of objects (label, confidence, boxes as normalised
``[x_min, y_min, x_max, y_max]`` plus pixels when the image size is known), other messages as
their fields and small arrays.

What was written survives. Lines reach the operating system as they are written (one
``write`` and ``flush`` per record by default), so a node killed with SIGKILL loses none; they
reach the disk (``fsync``) at most ``fsync_interval_s`` after being written, at each rotation
and at the end, so a power cut loses at most that much. A run replaces the previous run's file
only once it has a record: the new file is written under a hidden partial name and renamed over
the old one on the first line, so a graph that fails to start, or ends before its first record,
leaves yesterday's output as it was.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
from pydantic import Field

from pipeline import Classifications, Detections, Input, Message, Node, NodeParams, ParamIssue
from pipeline.checks import output_path
from pipeline_nodes.files import fsync_folder, partial_path, publish, writable_file

_MAX_LISTED = 4096  # arrays larger than this are summarised, not listed


def _rounded(arr: np.ndarray, digits: int) -> list[Any]:
    values: list[Any] = np.round(np.asarray(arr, np.float64), digits).tolist()
    return values


def detections_records(detections: Detections) -> list[dict[str, Any]]:
    """One dict per detection: label, class_id, confidence, xyxy (normalised), xyxy_px (when
    ``image_wh`` is known) and keypoints (normalised ``[[x, y], ...]``) when present."""
    w, h = detections.image_wh
    boxes = _rounded(detections.xyxy, 6)
    pixels = _rounded(detections.pixels(), 2) if w and h else None
    keypoints = None if detections.keypoints is None else _rounded(detections.keypoints, 6)
    records = []
    for i, (label, class_id, confidence) in enumerate(
        zip(detections.class_names, detections.class_id.tolist(), detections.confidence.tolist())
    ):
        record: dict[str, Any] = {
            "label": label,
            "class_id": class_id,
            "confidence": round(confidence, 6),
            "xyxy": boxes[i],
        }
        if pixels is not None:
            record["xyxy_px"] = pixels[i]
        if keypoints is not None:
            record["keypoints"] = keypoints[i]
        records.append(record)
    return records


def classifications_records(classifications: Classifications) -> list[dict[str, Any]]:
    """One dict per label, best first: label, class_id, confidence."""
    return [
        {"label": label, "class_id": class_id, "confidence": round(confidence, 6)}
        for label, class_id, confidence in zip(
            classifications.class_names,
            classifications.class_id.tolist(),
            classifications.confidence.tolist(),
        )
    ]


def message_record(message: Message) -> dict[str, Any]:
    """A JSON-ready dict of a message: identity, then its content.

    Detections become ``image_wh`` and ``detections`` (see :func:`detections_records`),
    Classifications become ``classifications``; other messages list their fields and small
    arrays (larger ones, such as images, are summarised by shape and dtype).
    """
    record: dict[str, Any] = {
        "kind": message.kind,
        "seq": message.seq,
        "source": message.source,
        "t_capture_ns": message.t_capture_ns,
    }
    if isinstance(message, Detections):
        record["image_wh"] = list(message.image_wh)
        record["detections"] = detections_records(message)
    elif isinstance(message, Classifications):
        record["classifications"] = classifications_records(message)
    else:
        record.update(message.wire_fields())
        for name, arr in message.wire_arrays().items():
            arr = np.asarray(arr)
            if arr.size <= _MAX_LISTED:
                record[name] = _rounded(arr, 6) if arr.dtype.kind == "f" else arr.tolist()
            else:
                record[name] = {"shape": list(arr.shape), "dtype": arr.dtype.str}
    if message.meta:
        record["meta"] = dict(message.meta)
    return record


def _json_default(value: Any) -> Any:
    # meta is msgpack-serialisable: bytes and numpy scalars are what JSON lacks
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def rotate(path: Path, backups: int) -> None:
    """Shift ``path.1`` .. ``path.{backups-1}`` up by one and move ``path`` to ``path.1``.

    The oldest backup falls off; with ``backups == 0`` the file is simply removed.
    """
    if backups == 0:
        path.unlink(missing_ok=True)
        return
    for i in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{i + 1}"))
    if path.exists():
        os.replace(path, path.with_name(f"{path.name}.1"))


class JsonlSink(Node):
    """Write one JSON line per message: seq, timestamps, content and metadata.

    Detections are written as ``detections: [{label, class_id, confidence, xyxy, xyxy_px,
    keypoints}]`` with ``xyxy`` normalised ``[x_min, y_min, x_max, y_max]`` (``xyxy_px`` only
    when ``image_wh`` is known); Classifications as ``classifications: [{label, class_id,
    confidence}]``; other messages as their fields and small arrays (images are summarised by
    shape and dtype). Each line also carries ``t_written_ns`` and ``latency_ms`` (capture to
    write). With ``max_bytes`` the file is rotated like a log (``path.1`` is the newest backup,
    ``backups`` are kept). Lines are flushed to the operating system every ``flush_every``
    messages (default: each one, so a killed node loses no line) and synced to the disk at
    most ``fsync_interval_s`` after they were written, at each rotation and at the end. An
    existing file is replaced (or, with ``append``, extended) only from the first record on:
    a run that writes nothing leaves it as it was. A folder it cannot write fails ``open()``.
    Ends when its input ends; it writes as fast as messages come, and a full input edge waits
    or drops as its ``when_full`` says.

    Example:
        - id: log
          node: jsonl
          params: {path: out/detections.jsonl, max_bytes: 10000000, backups: 3}
          inputs: {messages: detector/detections}
    """

    class Params(NodeParams):
        path: str = Field(description="The file to write (its folder is created).")
        append: bool = Field(False, description="Append instead of replacing the file.")
        flush_every: int = Field(
            1, ge=1, description="Hand lines to the operating system every N lines."
        )
        fsync_interval_s: float = Field(
            1.0,
            ge=0,
            description="Most seconds a written line waits to be synced to the disk (the "
            "loss on a power cut); 0: sync every line.",
        )
        max_bytes: int = Field(
            0, ge=0, description="Rotate before the file would exceed this size; 0: never."
        )
        backups: int = Field(
            3, ge=0, le=1000, description="Rotated files kept (path.1 newest); 0: none kept."
        )

    messages = Input(Message, description="Any message.")

    @classmethod
    def check(cls, params: Params) -> Iterator[ParamIssue]:
        yield from output_path("path", params.path)

    def open(self) -> None:
        # checks only: the file is opened (and an old one replaced) on the first record
        self._path = writable_file(self.params.path, node_id=self.id, param="path")
        self._partial = partial_path(self._path)
        self._partial.unlink(missing_ok=True)  # a run killed before its first record
        self._file: IO[str] | None = None
        self._size = 0
        self._lines = 0
        self._unsynced = False
        self._last_sync = time.monotonic()

    def _start(self) -> IO[str]:
        if self.params.append:
            file = self._path.open("a", encoding="utf-8")
        else:
            file = self._partial.open("w", encoding="utf-8")
        self._size = file.tell()
        return file

    def process(self, messages: Message) -> None:
        p = self.params
        record = message_record(messages)
        now = time.monotonic_ns()
        record["t_written_ns"] = now
        if messages.t_capture_ns:
            record["latency_ms"] = round((now - messages.t_capture_ns) / 1e6, 3)
        # ASCII-only JSON: the line's length is its size in bytes
        line = json.dumps(record, separators=(",", ":"), default=_json_default) + "\n"
        file = self._file
        if file is None:
            file = self._file = self._start()
        if p.max_bytes and self._size and self._size + len(line) > p.max_bytes:
            self._sync(file)
            file.close()
            rotate(self._path, p.backups)
            file = self._file = self._path.open("w", encoding="utf-8")
            self._size = 0
        file.write(line)
        self._size += len(line)
        self._lines += 1
        self._unsynced = True
        if self._lines % p.flush_every == 0:
            file.flush()
        if self._lines == 1 and not p.append:
            file.flush()
            publish(self._partial, self._path)  # the run has a record: replace the old file
        if time.monotonic() - self._last_sync >= p.fsync_interval_s:
            self._sync(file)

    def _sync(self, file: IO[str]) -> None:
        if self._unsynced:
            file.flush()
            os.fsync(file.fileno())
            self._unsynced = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._file is None:
            self.log.info("no record arrived: %s was left as it was", self.params.path)
            return
        self._sync(self._file)
        self._file.close()
        self._file = None
        fsync_folder(self._path.parent)
        self.log.info("wrote %d lines to %s", self._lines, self.params.path)
