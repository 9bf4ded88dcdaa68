"""What the store takes and returns: upload metadata, stored items, filters, boxes.

Plain frozen records, free of database sessions, so the gRPC services and the CLI build and
read them without touching SQLAlchemy.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from pathlib import Path

from pipeline_cloud.db import BoundingBox
from pipeline_cloud.errors import InvalidArgument

__all__ = ["BinaryFilter", "BinaryRecord", "BoxRecord", "UploadMeta", "box_row", "check_box"]


@dataclasses.dataclass(frozen=True)
class BoxRecord:
    id: str
    label: str
    x_min: float
    y_min: float
    x_max: float
    y_max: float
    confidence: float | None = None


@dataclasses.dataclass(frozen=True)
class UploadMeta:
    """What an upload says about its file (Viam's ``UploadMetadata`` and sensor times)."""

    part_id: str = ""
    component_type: str = ""
    component_name: str = ""
    method_name: str = ""
    file_name: str = ""
    file_ext: str = ""
    mime_type: str = ""
    tags: tuple[str, ...] = ()
    dataset_ids: tuple[str, ...] = ()
    time_requested: dt.datetime | None = None
    time_received: dt.datetime | None = None
    boxes: tuple[BoxRecord, ...] = ()
    classifications: tuple[tuple[str, float | None], ...] = ()


@dataclasses.dataclass(frozen=True)
class BinaryRecord:
    """One stored item as a query returns it."""

    id: str
    seq: int
    org_id: str
    meta: UploadMeta
    uploaded_at: dt.datetime
    size: int
    sha256: str
    blob_path: Path
    boxes: tuple[BoxRecord, ...]
    classifications: tuple[tuple[str, str, float | None], ...]


@dataclasses.dataclass(frozen=True)
class BinaryFilter:
    """The part of Viam's ``Filter`` this cloud applies (empty fields match everything)."""

    component_name: str = ""
    component_type: str = ""
    method: str = ""
    part_id: str = ""
    mime_types: tuple[str, ...] = ()
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    tags: tuple[str, ...] = ()  # any of these tags (Viam's TAGS_FILTER_TYPE_MATCH_BY_OR)
    tagged: bool | None = None  # True: only tagged items, False: only untagged
    bbox_labels: tuple[str, ...] = ()
    dataset_id: str = ""


def check_box(box: BoxRecord) -> None:
    corners = (box.x_min, box.y_min, box.x_max, box.y_max)
    if not all(0.0 <= c <= 1.0 for c in corners):
        raise InvalidArgument(f"box corners must be normalised to 0..1, got {list(corners)}")
    if box.x_min > box.x_max or box.y_min > box.y_max:
        raise InvalidArgument(f"box corners must be [x_min, y_min, x_max, y_max], got {corners}")
    if not box.label:
        raise InvalidArgument("a bounding box needs a label")


def box_row(seq: int, box: BoxRecord) -> BoundingBox:
    return BoundingBox(
        id=box.id or str(uuid.uuid4()),
        binary_seq=seq,
        label=box.label,
        x_min=box.x_min,
        y_min=box.y_min,
        x_max=box.x_max,
        y_max=box.y_max,
        confidence=box.confidence,
    )
