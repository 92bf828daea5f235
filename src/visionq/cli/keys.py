"""`visionq keys create|list|revoke`: API keys, straight in the database and Redis the service uses (the
first admin key is made this way, before any exists to call the admin API with)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from visionq.cli.options import EXIT_FAILED, console, errors, load_settings, require_extra
from visionq.wire.states import Role

if TYPE_CHECKING:
    from sqlalchemy import Engine

app = typer.Typer(help="API keys (VISIONQ_AUTH=required): make, list, revoke.", no_args_is_help=True)


@app.callback()
def _needs_the_server() -> None:
    require_extra("keys", "api")


@contextmanager
def _database() -> Iterator[Engine]:
    from visionq.archive import schema
    from visionq.archive.repository import create_engine_for

    settings = load_settings()
    engine = create_engine_for(settings.archive_url)
    try:
        if settings.database_migrate:
            schema.upgrade(engine)
        yield engine
    finally:
        engine.dispose()


@app.command("create")
def create(
    role: Annotated[Role, typer.Option(help="`user` submits and follows its own jobs; `admin` may do anything.")],
    name: Annotated[str, typer.Option(help="What the key is for, to recognise it in lists.")] = "",
) -> None:
    """Make an API key and print it: alone on the last line, shown this once."""
    from visionq.archive import audit
    from visionq.auth import keys

    with _database() as engine:
        key, info = keys.create_key(engine, role, name)
        audit.record_action(engine, "cli", "key.create", info.key_id, {"role": role.value, "name": name})
    console.print(f"made {role.value} key {info.key_id} ({name or 'no name'}); it is shown once:", highlight=False)
    typer.echo(key)


@app.command("list")
def list_() -> None:
    """List the API keys (never the keys themselves)."""
    from visionq.auth import keys

    with _database() as engine:
        found = keys.list_keys(engine)
    table = Table()
    for column in ("key id", "role", "name", "created", "revoked"):
        table.add_column(column)
    for info in found:
        revoked = info.revoked_at.isoformat(timespec="seconds") if info.revoked_at else ""
        table.add_row(info.key_id, info.role.value, info.name, info.created_at.isoformat(timespec="seconds"), revoked)
    console.print(table)


@app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key id (`visionq keys list`).")]) -> None:
    """Revoke a key: its next request is refused, and so are the access tokens made from it."""
    from visionq.archive import audit
    from visionq.auth import keys
    from visionq.connections import sync_redis
    from visionq.jobs.credentials import forget_key

    settings = load_settings()
    with _database() as engine:
        info = keys.revoke_key(engine, key_id)
        if info is None:
            errors.print(f"error[not_found]: no API key {key_id!r}")
            raise typer.Exit(EXIT_FAILED)
        redis = sync_redis(settings)
        try:
            forget_key(redis, key_hash=info.key_hash, key_id=info.key_id, token_ttl=settings.access_token_ttl)
        finally:
            redis.close()
        audit.record_action(engine, "cli", "key.revoke", key_id)
    console.print(f"revoked key {key_id}")
