"""A sink that writes one JSON line per message."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any

import numpy as np
from pydantic import Field

from pipeline import Input, Message, Node, NodeParams

_MAX_LISTED = 4096  # arrays larger than this are summarised, not listed


def message_record(message: Message) -> dict[str, Any]:
    """A JSON-ready dict of a message: identity, fields and small arrays as lists."""
    record: dict[str, Any] = {
        "kind": message.kind,
        "seq": message.seq,
        "source": message.source,
        "t_capture_ns": message.t_capture_ns,
    }
    record.update(message._fields())
    for name, arr in message._arrays().items():
        arr = np.asarray(arr)
        if arr.size <= _MAX_LISTED:
            record[name] = np.round(arr, 6).tolist() if arr.dtype.kind == "f" else arr.tolist()
        else:
            record[name] = {"shape": list(arr.shape), "dtype": arr.dtype.str}
    if message.meta:
        record["meta"] = dict(message.meta)
    return record


class JsonlSink(Node):
    """Write one JSON line per message: seq, timestamps, fields, metadata and small arrays.

    Large arrays (images) are summarised by shape and dtype. Each line also carries
    ``t_written_ns`` and ``latency_ms`` (capture to write). Lines are flushed every
    ``flush_every`` messages and at the end. Ends when its input ends.

    Example:
        - id: log
          node: jsonl
          params: {path: out/detections.jsonl}
          inputs: {messages: detector/detections}
    """

    class Params(NodeParams):
        path: str = Field(description="The file to write (its folder is created).")
        append: bool = Field(False, description="Append instead of truncating.")
        flush_every: int = Field(1, ge=1, description="Flush the file every N lines.")

    messages = Input(Message, description="Any message.")

    def open(self) -> None:
        path = Path(self.params.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] = path.open("a" if self.params.append else "w", encoding="utf-8")
        except OSError as exc:
            raise OSError(
                f"cannot write {str(path)!r}: {exc.strerror}; choose a writable 'path'"
            ) from None
        self._lines = 0

    def process(self, messages: Message) -> None:
        record = message_record(messages)
        now = time.monotonic_ns()
        record["t_written_ns"] = now
        if messages.t_capture_ns:
            record["latency_ms"] = round((now - messages.t_capture_ns) / 1e6, 3)
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._lines += 1
        if self._lines % self.params.flush_every == 0:
            self._file.flush()

    def close(self) -> None:
        self._file.close()
