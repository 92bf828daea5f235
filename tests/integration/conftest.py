"""Real parts for integration tests: a Redis server, a Celery worker process, the API on a port.

Redis is the machine's own server on a dedicated database when VISIONQ_TEST_REDIS_URL is set
(CI sets redis://127.0.0.1:6379/15), otherwise a private redis-server started for the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from integration.stack import FAST_RECOVERY, ApiServer, WorkerProcess
from visionq.embedded import EmbeddedRedis
from visionq.settings import Settings


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("VISIONQ_TEST_REDIS_URL")
    if url:
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
        yield url
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), persistent=False) as server:
        yield server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty archive database: a SQLite file, then a private schema of the PostgreSQL at
    VISIONQ_TEST_DATABASE_URL (CI sets postgresql+psycopg://postgres@127.0.0.1:5432/test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'archive.sqlite3'}"
        return
    server = os.environ.get("VISIONQ_TEST_DATABASE_URL")
    if not server:
        pytest.skip("set VISIONQ_TEST_DATABASE_URL to a PostgreSQL database to run the archive tests on it")
    schema = f"visionq_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(server).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


StackFactory = Callable[..., tuple[Settings, WorkerProcess, ApiServer]]


@pytest.fixture(scope="session")
def start_session_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackFactory]:
    """Start a worker and an API sharing settings; each stack gets its own queue. All stacks share one archive,
    as all processes sharing a Redis must: any worker may archive any job. Those still running at the end of
    the session are stopped then; tests start theirs with `start_stack`."""
    started: list[tuple[WorkerProcess, ApiServer]] = []
    archive_url = f"sqlite:///{tmp_path_factory.mktemp('archive') / 'archive.sqlite3'}"

    def factory(name: str, **overrides: Any) -> tuple[Settings, WorkerProcess, ApiServer]:
        data_dir: Path = tmp_path_factory.mktemp(name)
        values = {
            **FAST_RECOVERY,
            "redis_url": redis_url,
            "queue": f"visionq-test-{name}",
            "data_dir": data_dir,
            "database_url": archive_url,
        }
        settings = Settings(**{**values, **overrides})
        worker, api = WorkerProcess(settings), ApiServer(settings)
        started.append((worker, api))
        worker.start()
        api.start()
        return settings, worker, api

    yield factory
    for worker, api in started:
        api.stop()
        worker.stop()


@pytest.fixture(scope="module")
def start_stack(start_session_stack: StackFactory) -> Iterator[StackFactory]:
    """`start_session_stack` for one test module: its stacks are stopped when the module ends, so that idle
    workers (each polling Redis a few times a second) do not pile up and slow the rest of the run."""
    mine: list[tuple[WorkerProcess, ApiServer]] = []

    def factory(name: str, **overrides: Any) -> tuple[Settings, WorkerProcess, ApiServer]:
        settings, worker, api = start_session_stack(name, **overrides)
        mine.append((worker, api))
        return settings, worker, api

    yield factory
    for worker, api in mine:
        api.stop()
        worker.stop()


#: The exact built-in models (each also has an int8 build, `<name>-int8`).
EXACT_BUILTINS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")


@pytest.fixture(scope="session")
def stack(start_session_stack: StackFactory) -> tuple[Settings, WorkerProcess, ApiServer]:
    """The shared stack: a `solo` worker (jobs run in its main process) with every exact built-in model warm, and
    Lite0's int8 build.
    The stacks of the priority and kill tests use the default prefork pool."""
    return start_session_stack("main", warm_models=[*EXACT_BUILTINS, "efficientnet-lite0-int8"], worker_pool="solo")


@pytest.fixture
def api(stack: tuple[Settings, WorkerProcess, ApiServer]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack[2].url, timeout=30) as client:
        yield client
