"""The long-term archive of finished jobs (SQLAlchemy 2 + Alembic; SQLite by default, PostgreSQL by URL)."""
