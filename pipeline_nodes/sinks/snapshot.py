"""A sink that saves frames as JPEG or PNG files: every N-th, or when given labels are seen.

:func:`snapshot_name` expands the file-name pattern (checked when the params are validated,
so ``pipeline check`` reports a bad one) and :func:`has_labels` decides whether detections
contain a wanted label; the ``SnapshotSink`` node encodes the frame and writes it to a
temporary name first, then renames it, so a program watching the folder never reads half a
file.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from pathlib import Path

from pydantic import Field, field_validator

from pipeline import Detections, Frame, Input, Node, NodeParams, ParamIssue
from pipeline.checks import output_path
from pipeline_nodes.colors import frame_color, to_bgr
from pipeline_nodes.dependencies import import_cv2
from pipeline_nodes.files import writable_folder

EXTENSIONS = (".jpg", ".jpeg", ".png")


def snapshot_name(pattern: str, *, seq: int, source: str, node: str) -> str:
    """The file name for a frame: ``pattern`` formatted with ``seq``, ``source`` and ``node``.

    Raises:
        ValueError: the pattern uses another field, is malformed, names a folder, or does not
            end in .jpg, .jpeg or .png.
    """
    try:
        name = pattern.format(seq=seq, source=source, node=node)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"pattern {pattern!r} cannot be formatted ({type(exc).__name__}: {exc}); "
            "use the fields {seq}, {source} and {node}, e.g. 'frame_{seq:06d}.jpg'"
        ) from None
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"pattern {pattern!r} gives {name!r}, which is not a plain file name")
    if Path(name).suffix.lower() not in EXTENSIONS:
        raise ValueError(f"pattern {pattern!r} must end in one of {', '.join(EXTENSIONS)}")
    return name


def has_labels(detections: Detections, labels: Collection[str], min_confidence: float) -> bool:
    """True when a detection of one of ``labels`` has at least ``min_confidence``."""
    return any(
        name in labels and float(confidence) >= min_confidence
        for name, confidence in zip(detections.class_names, detections.confidence)
    )


class SnapshotSink(Node):
    """Save frames as JPEG or PNG files: every ``every_n``-th, or only when ``labels`` are seen.

    The file name is ``pattern`` formatted with ``{seq}``, ``{source}`` and ``{node}``; its
    extension picks the format. With ``labels``, only frames whose joined ``detections``
    (optional input, joined with ``frames`` on seq) contain one of those labels at
    ``min_confidence`` or more are saved; ``every_n`` then counts those frames. Files appear
    whole (written under a temporary name, then renamed). A folder it cannot create or write
    fails ``open()``; ``labels`` without a connected ``detections`` input fails the first
    ``process()``. The files written are counted as ``written`` in the node's statistics. The
    input is read-only. Ends when its inputs end; a full input edge waits or drops as its
    ``when_full`` says.

    Example:
        - id: snapshots
          node: snapshot
          params: {folder: out/people, pattern: "person_{seq:06d}.jpg", labels: [person]}
          inputs:
            frames: camera/frames
            detections: detector/detections
    """

    preload_modules = ("cv2",)

    class Params(NodeParams):
        folder: str = Field(description="Where the files go (created if missing).")
        pattern: str = Field(
            "{source}_{seq:08d}.jpg",
            description="File name with the fields {seq}, {source}, {node}; the extension "
            "(.jpg, .jpeg, .png) picks the format.",
        )
        every_n: int = Field(1, ge=1, description="Save one frame in every N (that qualify).")
        labels: list[str] = Field(
            [], description="Save only frames with a detection of one of these labels."
        )
        min_confidence: float = Field(
            0.0, ge=0.0, le=1.0, description="Least confidence of a detection in 'labels'."
        )
        jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality, 1..100.")
        png_compression: int = Field(3, ge=0, le=9, description="PNG compression, 0..9.")

        @field_validator("pattern")
        @classmethod
        def _pattern_formats(cls, value: str) -> str:
            snapshot_name(value, seq=0, source="camera", node="snapshot")
            return value

    frames = Input(Frame, description="(H, W[, C]) uint8 frames in meta['color'].")
    detections = Input(
        Detections, required=False, description="Detections of the same frames (for labels)."
    )

    @classmethod
    def check(cls, params: Params) -> Iterator[ParamIssue]:
        yield from output_path("folder", params.folder, "folder")

    def open(self) -> None:
        cv2 = import_cv2(f"the snapshot node {self.id!r}")
        self._imencode = cv2.imencode
        p = self.params
        self._folder = writable_folder(p.folder, node_id=self.id, param="folder")
        self._encode_params = {
            ".jpg": [int(cv2.IMWRITE_JPEG_QUALITY), p.jpeg_quality],
            ".jpeg": [int(cv2.IMWRITE_JPEG_QUALITY), p.jpeg_quality],
            ".png": [int(cv2.IMWRITE_PNG_COMPRESSION), p.png_compression],
        }
        self._labels = frozenset(p.labels)
        self._qualified = 0

    def process(self, frames: Frame, detections: Detections | None = None) -> None:
        p = self.params
        if self._labels:
            if detections is None:
                raise ValueError(
                    f"node {self.id!r} has 'labels' {p.labels} but no 'detections' input; "
                    "connect detections or remove 'labels'"
                )
            if not has_labels(detections, self._labels, p.min_confidence):
                return
        self._qualified += 1
        if (self._qualified - 1) % p.every_n:
            return
        name = snapshot_name(p.pattern, seq=frames.seq, source=frames.source, node=self.id)
        suffix = Path(name).suffix.lower()
        # JPEG and PNG take grey and BGR as they are; other colours become BGR
        keep = frame_color(frames.image, frames.meta) in ("gray", "bgr")
        image = frames.image if keep else to_bgr(frames)
        ok, data = self._imencode(suffix, image, self._encode_params[suffix])
        if not ok:
            raise RuntimeError(f"node {self.id!r}: encoding seq {frames.seq} as {suffix} failed")
        path = self._folder / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_bytes(data.tobytes())
        os.replace(tmp, path)
        self.count("written")
