"""The `visionq` command: serve, api, worker here; the client commands (classify, status, result, watch,
models) in `cli/jobs.py`."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from visionq.cli.options import console, errors, load_settings, require_extra, server_settings
from visionq.settings import WorkerPool

if TYPE_CHECKING:
    from sqlalchemy import Engine

app = typer.Typer(
    help="visionq: asynchronous image classification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8000).")] = None,
) -> None:
    """Run everything on this machine: embedded Redis, a worker and the API. Ctrl-C stops it all."""
    settings = server_settings("serve", "server", host=host, port=port)
    from visionq.cli.serve import serve as run

    console.print("visionq starting (Ctrl-C to stop)")
    # Ctrl-C surfaces as KeyboardInterrupt, or not: uvicorn raises the signal again once it has shut down, and
    # asyncio's runner may have taken it first and let the server end normally. Either way all has stopped here.
    with contextlib.suppress(KeyboardInterrupt):
        run(settings, announce=lambda line: console.print(line, soft_wrap=True))
    console.print("visionq stopped")


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Run the HTTP API alone, against the Redis of VISIONQ_REDIS_URL."""
    settings = server_settings("api", "api", host=host, port=port)
    import uvicorn

    from visionq.api.app import server_config

    uvicorn.Server(server_config(settings)).run()


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Jobs run at once (processes for prefork).")] = None,
    pool: Annotated[WorkerPool | None, typer.Option(help="Celery pool.")] = None,
    callbacks: Annotated[
        bool, typer.Option("--callbacks", help="Deliver callbacks (threads, VISIONQ_CALLBACK_QUEUE) instead.")
    ] = False,
) -> None:
    """Run a Celery worker alone, against the Redis of VISIONQ_REDIS_URL."""
    settings = server_settings("worker", "worker", worker_concurrency=concurrency, worker_pool=pool)
    import visionq.worker.signals  # noqa: F401  (connects the per-process set-up)
    from visionq.worker.celery_app import CALLBACKS, create_celery_app

    celery = create_celery_app(settings)
    if callbacks:
        if settings.callback_secret is None:
            errors.print("error: a callbacks worker needs VISIONQ_CALLBACK_SECRET to sign its deliveries")
            raise typer.Exit(2)
        celery.role = CALLBACKS
        queue, pool_name, processes = settings.callback_queue, "threads", concurrency or settings.callback_concurrency
    else:
        queue, pool_name, processes = settings.queue, settings.pool.value, settings.concurrency
    # The worker that `celery worker` would start, without Celery's command line (click, click-repl and
    # prompt_toolkit: a fifth of a second of every worker's start).
    from celery.utils.nodenames import default_nodename, host_format

    running = celery.Worker(
        queues=[queue],
        pool_cls=pool_name,
        concurrency=processes,
        loglevel=settings.log_level,
        # One name per process: two workers of one host must not share RabbitMQ's exclusive control queue.
        hostname=host_format(default_nodename(f"visionq-{celery.role}-{os.getpid()}@%h")),
        without_gossip=True,
        without_mingle=True,
        # visionq's own heartbeats (jobs/heartbeats.py) say which workers live; Celery's event heartbeats were a
        # pub/sub message every 2 s per worker that nothing read.
        without_heartbeat=True,
        # Celery's ASCII-art banner: the worker logs what it says in one line as it becomes ready (worker/signals.py).
        quiet=True,
    )
    running.start()
    if running.exitcode:
        raise typer.Exit(running.exitcode)


@app.command()
def prepare(
    models: Annotated[
        list[str] | None,
        typer.Argument(help="Models to prepare: `latest`, names, `name@version`, `*` (default: VISIONQ_WARM_MODELS)."),
    ] = None,
) -> None:
    """Make the built-in models' checked ONNX exports and int8 builds now, in VISIONQ_MODEL_CACHE_DIR, so that
    no worker makes them at its first start (run it at set-up, e.g. in the worker image's build)."""
    settings = server_settings("prepare", "worker")
    from rich.table import Table

    from visionq.errors import VisionqError
    from visionq.inference.registry import ALL_MODELS, ModelRegistry
    from visionq.inference.sources import ModelSources
    from visionq.settings import BuiltinRuntime

    sources = ModelSources(settings)
    registry = ModelRegistry(
        sources.catalog,
        threads=settings.threads_per_job,
        cache=settings.model_cache,
        builtin_onnx=settings.builtin_runtime is BuiltinRuntime.ONNX,
        weights=sources.ensure_weights,
    )
    failures: dict[str, Exception] = {}
    try:
        specs = registry.warm(models or settings.warm_models, failed=lambda spec, exc: failures.update({spec.ref: exc}))
    except VisionqError as exc:
        errors.print(f"error: {exc.detail}")
        raise typer.Exit(2) from exc
    table = Table("model", "runs on", "agreement", "seconds", title=f"prepared in {settings.model_cache}")
    for spec in specs:
        check = registry.exports.get(spec.ref)
        table.add_row(
            spec.ref,
            check.runtime if check else spec.runtime.value,
            f"{check.agreement:.1%} of {check.sample}" if check else "-",
            f"{registry.load_seconds[spec.ref]:.1f}",
        )
    for ref in failures:
        table.add_row(ref, "not prepared", "-", "-")
    console.print(table)
    if ALL_MODELS in [ref.strip() for ref in models or settings.warm_models]:
        unserved = {spec.ref: why for spec in registry.catalog.specs() if (why := registry.not_served_here(spec))}
        for why in sorted(set(unserved.values())):
            skipped = ", ".join(ref for ref, reason in unserved.items() if reason == why)
            console.print(f"skipped, not served on this machine: {skipped} ({why})")
    for ref, failure in failures.items():
        message = str(failure)
        errors.print(f"error: {message if message.startswith(ref) else f'{ref}: {message}'}")
    if failures:
        raise typer.Exit(1)


@app.command("worker-alive", hidden=True)
def worker_alive(
    callbacks: Annotated[bool, typer.Option("--callbacks", help="Check a callbacks worker instead.")] = False,
) -> None:
    """Exit 0 while a worker process on this host sends heartbeats to Redis (a container health check)."""
    require_extra("worker-alive", "worker")
    import socket

    from redis import RedisError

    from visionq.connections import sync_redis
    from visionq.jobs import heartbeats

    redis = sync_redis(load_settings())
    try:
        alive = heartbeats.on_host(redis, socket.gethostname(), callbacks=callbacks)
    except RedisError as exc:
        errors.print(f"Redis unreachable: {exc}")
        raise typer.Exit(1) from exc
    finally:
        redis.close()
    if not alive:
        errors.print(f"no heartbeat from a {'callbacks ' if callbacks else ''}worker on {socket.gethostname()}")
        raise typer.Exit(1)


#: The commands that run the server. They start without the client commands' modules (the SDK, httpx, rich's
#: tables): a third of a second of every worker's and API process's start.
SERVER_COMMANDS = frozenset({"serve", "api", "worker", "prepare", "worker-alive"})


def add_client_commands() -> None:
    """The commands that talk to the API, and the key and model commands."""
    from visionq.cli import admin, jobs, keys, models, verify

    for command in (jobs.classify, jobs.status, jobs.result, jobs.watch, verify.verify):
        app.command()(command)
    app.add_typer(models.app, name="models")
    app.add_typer(keys.app, name="keys")
    app.add_typer(admin.app, name="admin")


db = typer.Typer(help="The job archive's schema (SQLite or PostgreSQL, VISIONQ_DATABASE_URL).", no_args_is_help=True)
app.add_typer(db, name="db")


@db.callback()
def _db_needs_the_server() -> None:
    require_extra("db", "api")


@db.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Migrate the archive up to REVISION (default: the newest). API and workers do it at start unless
    VISIONQ_DATABASE_MIGRATE=false."""
    from visionq.archive import schema

    with _archive_engine() as engine:
        schema.upgrade(engine, revision)
        console.print(f"archive at revision {schema.current_revision(engine)}")


@db.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision; `base` drops every table.")]) -> None:
    """Migrate the archive down to REVISION."""
    from visionq.archive import schema

    with _archive_engine() as engine:
        schema.downgrade(engine, revision)
        console.print(f"archive at revision {schema.current_revision(engine) or 'base (empty)'}")


@db.command("current")
def db_current() -> None:
    """Print the archive's revision and the newest this version of visionq knows."""
    from visionq.archive import schema

    with _archive_engine() as engine:
        console.print(f"current: {schema.current_revision(engine) or 'base (empty)'}")
        console.print(f"head:    {schema.head_revision()}")


@contextmanager
def _archive_engine() -> Iterator[Engine]:
    from visionq.archive.repository import create_engine_for

    engine = create_engine_for(load_settings().archive_url)
    try:
        yield engine
    finally:
        engine.dispose()


@app.command("config-docs", hidden=True)
def config_docs() -> None:
    """Print docs/configuration.md, generated from the settings' field docstrings."""
    from visionq.cli.config_docs import render

    typer.echo(render(), nl=False)


def main() -> None:
    if not SERVER_COMMANDS.intersection(sys.argv[1:2]):
        add_client_commands()
    app()
