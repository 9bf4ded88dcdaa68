"""What every request does to the database and blob folder, scoped to one organisation.

:class:`Store` is the only code that touches rows; the gRPC services and the admin commands
call it. Every data method takes the caller's organisation id first and never returns, counts
or changes another organisation's rows: an id that belongs elsewhere is
:class:`~pipeline_cloud.errors.NotFound`, exactly like an id that does not exist. The methods
are blocking (the server runs them in threads).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pipeline_cloud.blobs import BlobStore
from pipeline_cloud.db import (
    ApiKey,
    BinaryItem,
    BinaryTag,
    BoundingBox,
    ClassificationLabel,
    Organization,
)
from pipeline_cloud.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from pipeline_cloud.records import (
    BinaryFilter,
    BinaryRecord,
    BoxRecord,
    UploadMeta,
    box_row,
    check_box,
)

__all__ = ["BinaryFilter", "BinaryRecord", "BoxRecord", "Store", "UploadMeta"]


def hash_key(key: str) -> str:
    """The stored form of an API key secret (the secret is 32 random bytes: no salt needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


class Store:
    """Organisations, keys and binary data over a session factory and a blob folder."""

    def __init__(self, sessions: sessionmaker[Session], blobs: BlobStore) -> None:
        self.sessions = sessions
        self.blobs = blobs

    # -- organisations and keys ----------------------------------------------------------

    def create_org(self, name: str) -> Organization:
        name = name.strip()
        if not name:
            raise InvalidArgument("an organisation needs a name")
        org = Organization(id=str(uuid.uuid4()), name=name)
        with self.sessions.begin() as s:
            if s.scalar(select(Organization).where(Organization.name == name)) is not None:
                raise AlreadyExists(f"organisation {name!r} exists already")
            s.add(org)
        return org

    def find_org(self, name_or_id: str) -> Organization:
        """An organisation by id or by name."""
        with self.sessions() as s:
            org = s.get(Organization, name_or_id) or s.scalar(
                select(Organization).where(Organization.name == name_or_id)
            )
        if org is None:
            raise NotFound(f"no organisation {name_or_id!r}")
        return org

    def list_orgs(self) -> list[Organization]:
        with self.sessions() as s:
            return list(s.scalars(select(Organization).order_by(Organization.name)))

    def create_key(self, org: str, name: str = "") -> tuple[str, str]:
        """A new API key for organisation ``org`` (id or name): ``(key_id, key)``.

        Only a hash of the key is stored; it cannot be shown again.
        """
        org_id = self.find_org(org).id
        key_id = str(uuid.uuid4())
        key = secrets.token_hex(32)  # hex: never starts with "-", so it pastes as an argument
        with self.sessions.begin() as s:
            s.add(ApiKey(id=key_id, org_id=org_id, name=name, key_hash=hash_key(key)))
        return key_id, key

    def verify_key(self, key_id: str, key: str) -> str | None:
        """The organisation id of a valid, unrevoked key; ``None`` otherwise."""
        with self.sessions() as s:
            row = s.get(ApiKey, key_id) if key_id else None
        if row is None or row.revoked:
            hmac.compare_digest(hash_key(key), "0" * 64)  # same work either way
            return None
        return row.org_id if hmac.compare_digest(hash_key(key), row.key_hash) else None

    def check_org(self, caller_org: str, requested: str) -> None:
        """Refuse a request that names an organisation other than the caller's."""
        if requested and requested != caller_org:
            with self.sessions() as s:
                org = s.scalar(select(Organization).where(Organization.name == requested))
            if org is None or org.id != caller_org:
                raise PermissionDenied(
                    f"this API key belongs to another organisation than {requested!r}"
                )

    # -- binary data ---------------------------------------------------------------------

    def upload(
        self, org_id: str, meta: UploadMeta, data: bytes, idempotency_key: str | None = None
    ) -> tuple[str, bool]:
        """Store a file: ``(binary_data_id, created)``.

        With an ``idempotency_key``, a repeat of an upload that already succeeded returns the
        first one's id and stores nothing (``created`` is False).
        """
        # No lookup first: a repeat is rare, and the unique (org, key) constraint catches it.
        blob_key = self.blobs.put(data)
        item = BinaryItem(
            id=str(uuid.uuid4()),
            org_id=org_id,
            part_id=meta.part_id,
            component_type=meta.component_type,
            component_name=meta.component_name,
            method_name=meta.method_name,
            file_name=meta.file_name,
            file_ext=meta.file_ext,
            mime_type=meta.mime_type,
            time_requested=meta.time_requested,
            time_received=meta.time_received,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            blob_key=blob_key,
            idempotency_key=idempotency_key or None,
            dataset_ids=list(meta.dataset_ids),
        )
        try:
            with self.sessions.begin() as s:
                s.add(item)
                s.flush()
                for tag in dict.fromkeys(meta.tags):
                    s.add(BinaryTag(binary_seq=item.seq, tag=tag))
                for box in meta.boxes:
                    s.add(box_row(item.seq, box))
                for label, confidence in meta.classifications:
                    s.add(
                        ClassificationLabel(
                            id=str(uuid.uuid4()),
                            binary_seq=item.seq,
                            label=label,
                            confidence=confidence,
                        )
                    )
        except IntegrityError:
            # A retry of an upload that was stored already: keep the first copy only.
            self.blobs.delete(blob_key)
            found = self._by_idempotency_key(org_id, idempotency_key) if idempotency_key else None
            if found is None:
                raise
            return found, False
        return item.id, True

    def _by_idempotency_key(self, org_id: str, key: str) -> str | None:
        with self.sessions() as s:
            found: str | None = s.scalar(
                select(BinaryItem.id).where(
                    BinaryItem.org_id == org_id, BinaryItem.idempotency_key == key
                )
            )
        return found

    def by_ids(self, org_id: str, ids: Sequence[str]) -> list[BinaryRecord]:
        """The items of ``ids`` in that order; any id not in this organisation is NotFound."""
        if not ids:
            raise InvalidArgument("give at least one binary data id")
        with self.sessions() as s:
            rows = {
                r.id: r
                for r in s.scalars(
                    select(BinaryItem).where(BinaryItem.org_id == org_id, BinaryItem.id.in_(ids))
                )
            }
            missing = [i for i in ids if i not in rows]
            if missing:
                raise NotFound(f"no binary data with id {missing[0]!r} in this organisation")
            return self._records(s, [rows[i] for i in ids])

    def blob_path(self, org_id: str, binary_id: str) -> Path:
        """Where item ``binary_id`` of this organisation keeps its bytes (one query)."""
        with self.sessions() as s:
            key = s.scalar(
                select(BinaryItem.blob_key).where(
                    BinaryItem.org_id == org_id, BinaryItem.id == binary_id
                )
            )
        if key is None:
            raise NotFound(f"no binary data with id {binary_id!r} in this organisation")
        return self.blobs.path(key)

    def by_filter(
        self,
        org_id: str,
        flt: BinaryFilter,
        limit: int = 50,
        last: str = "",
        newest_first: bool = False,
    ) -> tuple[list[BinaryRecord], int, str]:
        """A page of matching items, the total count, and the token of the next page."""
        with self.sessions() as s:
            query = self._filtered(org_id, flt)
            count = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            if last:
                try:
                    after = int(last)
                except ValueError as exc:
                    raise InvalidArgument(f"bad page token {last!r}") from exc
                query = query.where(
                    BinaryItem.seq < after if newest_first else BinaryItem.seq > after
                )
            order = BinaryItem.seq.desc() if newest_first else BinaryItem.seq.asc()
            rows = list(s.scalars(query.order_by(order).limit(max(1, min(limit or 50, 10_000)))))
            records = self._records(s, rows)
        return records, int(count), str(rows[-1].seq) if rows else ""

    def _filtered(self, org_id: str, flt: BinaryFilter) -> Any:
        q = select(BinaryItem).where(BinaryItem.org_id == org_id)
        for column, value in (
            (BinaryItem.component_name, flt.component_name),
            (BinaryItem.component_type, flt.component_type),
            (BinaryItem.method_name, flt.method),
            (BinaryItem.part_id, flt.part_id),
        ):
            if value:
                q = q.where(column == value)
        if flt.mime_types:
            q = q.where(BinaryItem.mime_type.in_(flt.mime_types))
        captured = func.coalesce(BinaryItem.time_requested, BinaryItem.uploaded_at)
        if flt.start is not None:
            q = q.where(captured >= flt.start)
        if flt.end is not None:
            q = q.where(captured <= flt.end)
        tagged = select(BinaryTag.binary_seq)
        if flt.tags:
            q = q.where(BinaryItem.seq.in_(tagged.where(BinaryTag.tag.in_(flt.tags))))
        if flt.tagged is True:
            q = q.where(BinaryItem.seq.in_(tagged))
        elif flt.tagged is False:
            q = q.where(BinaryItem.seq.not_in(tagged))
        if flt.bbox_labels:
            boxed = select(BoundingBox.binary_seq).where(BoundingBox.label.in_(flt.bbox_labels))
            q = q.where(BinaryItem.seq.in_(boxed))
        return q

    def _records(self, s: Session, rows: Sequence[BinaryItem]) -> list[BinaryRecord]:
        seqs = [r.seq for r in rows]
        tags: dict[int, list[str]] = {q: [] for q in seqs}
        boxes: dict[int, list[BoxRecord]] = {q: [] for q in seqs}
        labels: dict[int, list[tuple[str, str, float | None]]] = {q: [] for q in seqs}
        if seqs:
            for t in s.scalars(select(BinaryTag).where(BinaryTag.binary_seq.in_(seqs))):
                tags[t.binary_seq].append(t.tag)
            for b in s.scalars(select(BoundingBox).where(BoundingBox.binary_seq.in_(seqs))):
                boxes[b.binary_seq].append(
                    BoxRecord(b.id, b.label, b.x_min, b.y_min, b.x_max, b.y_max, b.confidence)
                )
            for c in s.scalars(
                select(ClassificationLabel).where(ClassificationLabel.binary_seq.in_(seqs))
            ):
                labels[c.binary_seq].append((c.id, c.label, c.confidence))
        return [
            BinaryRecord(
                id=r.id,
                seq=r.seq,
                org_id=r.org_id,
                meta=UploadMeta(
                    part_id=r.part_id,
                    component_type=r.component_type,
                    component_name=r.component_name,
                    method_name=r.method_name,
                    file_name=r.file_name,
                    file_ext=r.file_ext,
                    mime_type=r.mime_type,
                    tags=tuple(sorted(tags[r.seq])),
                    dataset_ids=tuple(r.dataset_ids or ()),
                    time_requested=r.time_requested,
                    time_received=r.time_received,
                ),
                uploaded_at=r.uploaded_at,
                size=r.size,
                sha256=r.sha256,
                blob_path=self.blobs.path(r.blob_key),
                boxes=tuple(boxes[r.seq]),
                classifications=tuple(labels[r.seq]),
            )
            for r in rows
        ]

    def delete(self, org_id: str, ids: Sequence[str]) -> int:
        """Delete this organisation's items among ``ids``; returns how many."""
        if not ids:
            raise InvalidArgument("give at least one binary data id")
        with self.sessions.begin() as s:
            rows = list(
                s.scalars(
                    select(BinaryItem).where(BinaryItem.org_id == org_id, BinaryItem.id.in_(ids))
                )
            )
            seqs = [r.seq for r in rows]
            if seqs:
                for table in (BinaryTag, BoundingBox, ClassificationLabel):
                    s.execute(delete(table).where(table.binary_seq.in_(seqs)))
                s.execute(delete(BinaryItem).where(BinaryItem.seq.in_(seqs)))
        for r in rows:
            self.blobs.delete(r.blob_key)
        return len(rows)

    def _seqs(self, s: Session, org_id: str, ids: Sequence[str]) -> dict[str, int]:
        if not ids:
            raise InvalidArgument("give at least one binary data id")
        found = {
            row[0]: row[1]
            for row in s.execute(
                select(BinaryItem.id, BinaryItem.seq).where(
                    BinaryItem.org_id == org_id, BinaryItem.id.in_(ids)
                )
            )
        }
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFound(f"no binary data with id {missing[0]!r} in this organisation")
        return found

    def add_tags(self, org_id: str, ids: Sequence[str], tags: Iterable[str]) -> None:
        tags = [t for t in dict.fromkeys(tags) if t]
        if not tags:
            raise InvalidArgument("give at least one tag")
        with self.sessions.begin() as s:
            seqs = list(self._seqs(s, org_id, ids).values())
            have = {
                (row[0], row[1])
                for row in s.execute(
                    select(BinaryTag.binary_seq, BinaryTag.tag).where(
                        BinaryTag.binary_seq.in_(seqs), BinaryTag.tag.in_(tags)
                    )
                )
            }
            s.add_all(
                BinaryTag(binary_seq=q, tag=t) for q in seqs for t in tags if (q, t) not in have
            )

    def remove_tags(self, org_id: str, ids: Sequence[str], tags: Iterable[str]) -> int:
        tags = list(tags)
        if not tags:
            raise InvalidArgument("give at least one tag")
        with self.sessions.begin() as s:
            seqs = list(self._seqs(s, org_id, ids).values())
            result = s.execute(
                delete(BinaryTag).where(BinaryTag.binary_seq.in_(seqs), BinaryTag.tag.in_(tags))
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def tags(self, org_id: str, flt: BinaryFilter) -> list[str]:
        with self.sessions() as s:
            sub = self._filtered(org_id, flt).with_only_columns(BinaryItem.seq)
            return list(
                s.scalars(
                    select(BinaryTag.tag)
                    .where(BinaryTag.binary_seq.in_(sub))
                    .distinct()
                    .order_by(BinaryTag.tag)
                )
            )

    def bbox_labels(self, org_id: str, flt: BinaryFilter) -> list[str]:
        with self.sessions() as s:
            sub = self._filtered(org_id, flt).with_only_columns(BinaryItem.seq)
            return list(
                s.scalars(
                    select(BoundingBox.label)
                    .where(BoundingBox.binary_seq.in_(sub))
                    .distinct()
                    .order_by(BoundingBox.label)
                )
            )

    def add_box(self, org_id: str, binary_id: str, box: BoxRecord) -> str:
        check_box(box)
        box = dataclasses.replace(box, id=str(uuid.uuid4()))
        with self.sessions.begin() as s:
            seq = self._seqs(s, org_id, [binary_id])[binary_id]
            s.add(box_row(seq, box))
        return box.id

    def update_box(
        self, org_id: str, binary_id: str, bbox_id: str, changes: dict[str, Any]
    ) -> None:
        """Change a box's label, corners or confidence (keys of :class:`BoxRecord`)."""
        with self.sessions.begin() as s:
            seq = self._seqs(s, org_id, [binary_id])[binary_id]
            row = s.scalar(
                select(BoundingBox).where(BoundingBox.binary_seq == seq, BoundingBox.id == bbox_id)
            )
            if row is None:
                raise NotFound(f"image {binary_id!r} has no bounding box {bbox_id!r}")
            box = BoxRecord(
                row.id, row.label, row.x_min, row.y_min, row.x_max, row.y_max, row.confidence
            )
            box = dataclasses.replace(box, **changes)
            check_box(box)
            for key, value in dataclasses.asdict(box).items():
                setattr(row, key, value)

    def remove_box(self, org_id: str, binary_id: str, bbox_id: str) -> None:
        with self.sessions.begin() as s:
            seq = self._seqs(s, org_id, [binary_id])[binary_id]
            result = s.execute(
                delete(BoundingBox).where(BoundingBox.binary_seq == seq, BoundingBox.id == bbox_id)
            )
            if not getattr(result, "rowcount", 0):
                raise NotFound(f"image {binary_id!r} has no bounding box {bbox_id!r}")

    def org_names(self, ids: Iterable[str]) -> dict[str, str]:
        with self.sessions() as s:
            rows = s.execute(
                select(Organization.id, Organization.name).where(Organization.id.in_(list(ids)))
            )
            return {row[0]: row[1] for row in rows}
