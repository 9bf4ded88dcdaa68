"""What a message derived from a frame keeps of the frame's ``meta``.

A source says which image a frame is (``image_folder``: ``file``, ``path``, ``index``;
``video_file``: ``frame_index``, ``pos_ms``; ``camera``: ``device``, ``frame_number``). A node
that derives detections, classifications or tensors from the frame keeps those, so a jsonl of
detections over a folder of images says which image each line is for. It drops the keys that
describe the frame's *pixels* (``transforms``: the boxes are already mapped back through them;
``color``), then adds its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["IMAGE_KEYS", "derived_meta"]

IMAGE_KEYS = frozenset({"transforms", "color"})
"""Frame meta keys about the image itself, which a derived message does not carry."""


def derived_meta(frame_meta: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """The frame's meta without :data:`IMAGE_KEYS`, with ``own`` (the node's keys) over it."""
    meta = {k: v for k, v in frame_meta.items() if k not in IMAGE_KEYS}
    meta.update(own)
    return meta
