"""The cloud's database: organisations, API keys, binary data and the model registry.

SQLAlchemy 2 declarative tables, one schema for SQLite (the embedded default, a file under the
data folder) and PostgreSQL (``--database postgresql://...``). The schema is created and
upgraded only by Alembic migrations (``pipeline_cloud/migrations``): :func:`open_database`
runs ``upgrade head`` before it hands out sessions, so a new release upgrades an old database
in place. Blobs (images, model files) live in the blob folder, not in the database; rows hold
their keys.

Ordering and paging use ``seq``, an autoincrementing integer, so that a page token is an
opaque integer that works the same on both databases.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

__all__ = [
    "ApiKey",
    "Base",
    "BinaryItem",
    "BinaryTag",
    "BoundingBox",
    "ClassificationLabel",
    "Model",
    "ModelShare",
    "ModelVersion",
    "Organization",
    "open_database",
    "utcnow",
]

# An integer primary key that autoincrements on SQLite too (BIGINT does not there).
_SeqType = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> dt.datetime:
    """The current time in UTC, without tzinfo (stored as such on both databases)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class ApiKey(Base):
    """An API key: its id is public, only a hash of the secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200), default="")
    key_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class BinaryItem(Base):
    """One uploaded file (an image, usually) and its capture metadata."""

    __tablename__ = "binary_data"
    __table_args__ = (
        UniqueConstraint("org_id", "idempotency_key", name="uq_binary_idempotency"),
        Index("ix_binary_org_seq", "org_id", "seq"),
    )

    seq: Mapped[int] = mapped_column(_SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    location_id: Mapped[str] = mapped_column(String(200), default="")
    robot_name: Mapped[str] = mapped_column(String(200), default="")
    robot_id: Mapped[str] = mapped_column(String(200), default="")
    part_id: Mapped[str] = mapped_column(String(200), default="")
    part_name: Mapped[str] = mapped_column(String(200), default="")
    component_type: Mapped[str] = mapped_column(String(200), default="")
    component_name: Mapped[str] = mapped_column(String(200), default="")
    method_name: Mapped[str] = mapped_column(String(200), default="")
    file_name: Mapped[str] = mapped_column(String(500), default="")
    file_ext: Mapped[str] = mapped_column(String(50), default="")
    mime_type: Mapped[str] = mapped_column(String(100), default="")
    time_requested: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    time_received: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    uploaded_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(String(64), default="")
    blob_key: Mapped[str] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    dataset_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)


class BinaryTag(Base):
    __tablename__ = "binary_tags"

    binary_seq: Mapped[int] = mapped_column(
        ForeignKey("binary_data.seq", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(200), primary_key=True, index=True)


class BoundingBox(Base):
    """A box annotation: corners normalised to 0..1, origin top-left."""

    __tablename__ = "bounding_boxes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    binary_seq: Mapped[int] = mapped_column(
        ForeignKey("binary_data.seq", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(String(200))
    x_min: Mapped[float] = mapped_column(Float)
    y_min: Mapped[float] = mapped_column(Float)
    x_max: Mapped[float] = mapped_column(Float)
    y_max: Mapped[float] = mapped_column(Float)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)


class ClassificationLabel(Base):
    __tablename__ = "classifications"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    binary_seq: Mapped[int] = mapped_column(
        ForeignKey("binary_data.seq", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(String(200))
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)


class Model(Base):
    """A registry item: a named model of an organisation (registry item id ``org:name``)."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("org_id", "name", name="uq_model_org_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    model_type: Mapped[str] = mapped_column(String(50))
    visibility: Mapped[str] = mapped_column(String(20), default="private")
    description: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class ModelVersion(Base):
    """One uploaded version of a model: the file, its framework, what it takes and gives."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_version"),)

    seq: Mapped[int] = mapped_column(_SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(100))
    framework: Mapped[str] = mapped_column(String(50))
    file_name: Mapped[str] = mapped_column(String(500))
    blob_key: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    inputs: Mapped[list[Any]] = mapped_column(JSON, default=list)
    outputs: Mapped[list[Any]] = mapped_column(JSON, default=list)
    labels: Mapped[list[Any]] = mapped_column(JSON, default=list)
    run_params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class ModelShare(Base):
    """A model shared with another organisation (read and run, not change)."""

    __tablename__ = "model_shares"

    model_id: Mapped[str] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )


def database_url(data_dir: Path, url: str | None) -> str:
    """``url`` as SQLAlchemy wants it, or the embedded SQLite file under ``data_dir``.

    ``postgresql://`` is mapped to the psycopg (3) driver.
    """
    if not url:
        return f"sqlite:///{(data_dir / 'cloud.db').resolve()}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never wait for the writer; NORMAL: a commit survives a process crash
    # (the blob is fsynced separately before its row is committed).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for a SQLAlchemy URL, with SQLite set up for several writer threads."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the schema up to the newest Alembic revision."""
    import logging

    # Alembic logs every plugin and step at INFO; a migration is worth a line only if it fails.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


def open_database(data_dir: Path, url: str | None = None) -> sessionmaker[Any]:
    """Migrate the database and return a session factory.

    Args:
        data_dir: the server's data folder (holds the SQLite file by default).
        url: a database URL (``postgresql://user@host/db``); ``None`` for SQLite in
            ``data_dir``.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(database_url(data_dir, url))
    migrate(engine)
    return sessionmaker(engine, expire_on_commit=False)
