"""The store and registry on SQLite and on a real PostgreSQL server (same tests, both)."""

from __future__ import annotations

import datetime as dt
import re
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from pipeline_cloud.blobs import BlobStore
from pipeline_cloud.db import ApiKey, BinaryItem, open_database
from pipeline_cloud.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from pipeline_cloud.registry import Registry, default_version
from pipeline_cloud.store import BinaryFilter, BoxRecord, Store, UploadMeta


@pytest.fixture
def stores(tmp_path: Path, database_url: str | None):
    sessions = open_database(tmp_path, database_url)
    blobs = BlobStore(tmp_path / "blobs")
    yield Store(sessions, blobs), Registry(sessions, blobs)
    sessions.kw["bind"].dispose()


def test_migrations_are_idempotent_and_orgs_unique(tmp_path, database_url, stores):
    store, _ = stores
    store.create_org("acme")
    open_database(tmp_path, database_url).kw["bind"].dispose()  # upgrade again: no-op
    with pytest.raises(AlreadyExists, match="acme"):
        store.create_org("acme")
    assert store.find_org("acme").name == "acme"
    with pytest.raises(NotFound):
        store.find_org("nobody")


def test_api_key_is_stored_as_a_hash_and_verifies(stores):
    store, _ = stores
    org = store.create_org("acme")
    key_id, key = store.create_key("acme")
    assert store.verify_key(key_id, key) == org.id
    assert store.verify_key(key_id, key + "x") is None
    assert store.verify_key("no-such-id", key) is None
    with store.sessions() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.id == key_id))
    assert row is not None
    assert key not in row.key_hash
    assert len(row.key_hash) == 64


def test_new_api_keys_paste_as_command_line_arguments(stores):
    """A key starting with "-" would be read as an option (``--key -abc``): keys are hex."""
    from pipeline.rpc.auth import ApiKeys

    store, _ = stores
    store.create_org("acme")
    keys = [store.create_key("acme")[1] for _ in range(40)]
    keys += [ApiKeys.generate()[1] for _ in range(200)]
    assert all(re.fullmatch(r"[0-9a-f]{64}", key) for key in keys), keys


def test_upload_with_the_same_idempotency_key_stores_one_copy(stores):
    store, _ = stores
    org = store.create_org("acme")
    first, created = store.upload(org.id, UploadMeta(file_ext=".jpg"), b"abc", "key-1")
    again, created_again = store.upload(org.id, UploadMeta(file_ext=".jpg"), b"abc", "key-1")
    assert (created, created_again) == (True, False)
    assert again == first
    # Concurrent retries race: still one row.
    results: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(store.upload(org.id, UploadMeta(), b"x", "key-2")[0])
        )
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    with store.sessions() as s:
        assert len(list(s.scalars(select(BinaryItem)))) == 2
    blob_files = [p for p in store.blobs.root.rglob("*") if p.is_file()]
    assert len(blob_files) == 2  # losers' blobs were removed


def test_filter_by_tags_mime_component_and_time_with_paging(stores):
    store, _ = stores
    org = store.create_org("acme")
    t0 = dt.datetime(2025, 4, 14, 16, 0, 0)
    ids = []
    for i in range(7):
        meta = UploadMeta(
            component_name="cam-a" if i % 2 == 0 else "cam-b",
            mime_type="image/jpeg" if i < 5 else "image/png",
            tags=("even",) if i % 2 == 0 else (),
            time_requested=t0 + dt.timedelta(minutes=i),
        )
        ids.append(store.upload(org.id, meta, bytes([i]))[0])
    page, count, last = store.by_filter(org.id, BinaryFilter(), limit=3)
    assert count == 7
    assert [r.id for r in page] == ids[:3]
    page2, _, _ = store.by_filter(org.id, BinaryFilter(), limit=3, last=last)
    assert [r.id for r in page2] == ids[3:6]
    assert [r.id for r in store.by_filter(org.id, BinaryFilter(tags=("even",)))[0]] == ids[0::2]
    assert [r.id for r in store.by_filter(org.id, BinaryFilter(tagged=False))[0]] == ids[1::2]
    pngs = store.by_filter(org.id, BinaryFilter(mime_types=("image/png",)))[0]
    assert [r.id for r in pngs] == ids[5:]
    cam_b = store.by_filter(org.id, BinaryFilter(component_name="cam-b"))[0]
    assert [r.id for r in cam_b] == ids[1::2]
    window = BinaryFilter(start=t0 + dt.timedelta(minutes=2), end=t0 + dt.timedelta(minutes=4))
    assert [r.id for r in store.by_filter(org.id, window)[0]] == ids[2:5]
    newest = store.by_filter(org.id, BinaryFilter(), limit=2, newest_first=True)[0]
    assert [r.id for r in newest] == [ids[6], ids[5]]


def test_another_organisations_data_is_not_found_and_untouched(stores):
    store, _ = stores
    mine, theirs = store.create_org("mine"), store.create_org("theirs")
    their_id, _ = store.upload(theirs.id, UploadMeta(tags=("secret",)), b"theirs")
    with pytest.raises(NotFound):
        store.by_ids(mine.id, [their_id])
    with pytest.raises(NotFound):
        store.add_tags(mine.id, [their_id], ["x"])
    with pytest.raises(NotFound):
        store.add_box(mine.id, their_id, BoxRecord("", "face", 0, 0, 1, 1))
    assert store.delete(mine.id, [their_id]) == 0
    assert store.by_filter(mine.id, BinaryFilter())[1] == 0
    assert store.tags(mine.id, BinaryFilter()) == []
    with pytest.raises(PermissionDenied):
        store.check_org(mine.id, theirs.id)
    with pytest.raises(PermissionDenied):
        store.check_org(mine.id, "theirs")
    store.check_org(mine.id, "mine")
    assert store.by_ids(theirs.id, [their_id])[0].meta.tags == ("secret",)


def test_tags_and_boxes_add_remove(stores):
    store, _ = stores
    org = store.create_org("acme")
    item, _ = store.upload(org.id, UploadMeta(tags=("a",)), b"img")
    store.add_tags(org.id, [item], ["b", "a"])
    assert store.by_ids(org.id, [item])[0].meta.tags == ("a", "b")
    assert store.remove_tags(org.id, [item], ["a"]) == 1
    box_id = store.add_box(org.id, item, BoxRecord("", "face", 0.1, 0.2, 0.3, 0.4, 0.9))
    (rec,) = store.by_ids(org.id, [item])
    assert [(b.id, b.label, b.confidence) for b in rec.boxes] == [(box_id, "face", 0.9)]
    assert store.bbox_labels(org.id, BinaryFilter()) == ["face"]
    with pytest.raises(InvalidArgument, match=r"0\.\.1"):
        store.add_box(org.id, item, BoxRecord("", "face", 0.1, 0.2, 1.3, 0.4))
    store.remove_box(org.id, item, box_id)
    assert store.by_ids(org.id, [item])[0].boxes == ()
    with pytest.raises(NotFound):
        store.remove_box(org.id, item, box_id)
    assert store.delete(org.id, [item]) == 1
    assert not [p for p in store.blobs.root.rglob("*") if p.is_file()]


def test_registry_versions_visibility_and_sharing(stores, catalog_model):
    store, registry = stores
    owner, other = store.create_org("owner"), store.create_org("other")
    data = catalog_model.read_bytes()
    rec = registry.create_version(owner.id, "faces", "object_detection", catalog_model.name, data)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d", rec.version)
    assert rec.framework == "tflite"
    assert rec.run_params["decoder"] == "blazeface"  # recognised as the catalog model
    assert rec.inputs == [{"name": "input", "dtype": "float32", "shape": [1, 128, 128, 3]}]
    with pytest.raises(AlreadyExists):
        registry.create_version(
            owner.id, "faces", "object_detection", catalog_model.name, data, version=rec.version
        )
    with pytest.raises(NotFound, match="not visible"):
        registry.resolve(other.id, owner.id, "faces")
    assert registry.list_versions(other.id) == []
    registry.share(owner.id, "faces", "other")
    assert registry.resolve(other.id, "owner", "faces").id == rec.id
    registry.share(owner.id, "faces", "other", remove=True)
    with pytest.raises(NotFound):
        registry.resolve(other.id, owner.id, "faces", rec.version)
    registry.set_visibility(owner.id, "faces", "public")
    assert [v.id for v in registry.list_versions(other.id)] == [rec.id]
    with pytest.raises(NotFound, match="no version"):
        registry.resolve(owner.id, owner.id, "faces", "nope")


def test_registry_refuses_files_that_do_not_load(stores, tmp_path):
    store, registry = stores
    org = store.create_org("acme")
    with pytest.raises(InvalidArgument, match="not a loadable onnx"):
        registry.create_version(org.id, "bad", "classification", "bad.onnx", b"not a model")
    with pytest.raises(InvalidArgument, match="framework"):
        registry.create_version(org.id, "bad", "classification", "model.bin", b"x")
    assert registry.list_versions(org.id) == []
    assert not [p for p in store.blobs.root.rglob("*") if p.is_file()]


def test_default_version_is_a_utc_timestamp():
    when = dt.datetime(2025, 4, 14, 16, 38, 25, tzinfo=dt.timezone.utc)
    assert default_version(when) == "2025-04-14T16-38-25"
