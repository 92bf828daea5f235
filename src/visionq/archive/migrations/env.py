"""Alembic's environment: run the migrations on the connection `visionq.archive.schema` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from visionq.archive.tables import Base

#: Any fixed number: the PostgreSQL advisory lock that lets one process at a time migrate.
MIGRATION_LOCK = 0x76697371  # "visq"

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
)
if connection.dialect.name == "postgresql":
    # API processes and workers may start together; the first migrates, the others then find it done.
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
with context.begin_transaction():
    context.run_migrations()
