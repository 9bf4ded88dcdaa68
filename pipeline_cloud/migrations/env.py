"""Alembic environment: migrations run on the connection :func:`pipeline_cloud.db.migrate`
passes in (no alembic.ini; the URL comes from ``pipeline cloud serve``)."""

from __future__ import annotations

from alembic import context

from pipeline_cloud.db import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through pipeline_cloud.db.migrate()")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
