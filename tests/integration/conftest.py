"""Real parts for integration tests: a Redis server, a Celery worker process, the API on a port.

Each stack (a worker and an API) runs on a private redis-server of its own (`new_redis`). Tests of the Redis-level
parts without a stack (the job store, events, steps) share `redis_url`: the machine's own server on a dedicated
database when VISIONQ_TEST_REDIS_URL is set (CI sets redis://127.0.0.1:6379/15), otherwise a private server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from environment import EXACT_BUILTINS, model_cache
from integration.stack import FAST_RECOVERY, ApiServer, WorkerProcess
from ports import free_port
from visionq.embedded import EmbeddedRedis
from visionq.settings import Settings


@pytest.fixture(scope="session")
def shared_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("VISIONQ_TEST_REDIS_URL")
    if url:
        yield worker_database(url, os.environ.get("PYTEST_XDIST_WORKER"))
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), port=free_port(), persistent=False) as server:
        yield server.url


def worker_database(url: str, worker: str | None) -> str:
    """`url` for pytest-xdist's worker `worker` (`gw0`, `gw1`, …): the database number counted down from `url`'s
    per worker (up from it where that would go below 0), so that processes running at once never flush each
    other's keys; `url` itself without xdist."""
    if worker is None:
        return url
    parsed = urlsplit(url)
    base, index = int(parsed.path.strip("/") or 0), int(worker.removeprefix("gw"))
    return parsed._replace(path=f"/{base - index if base >= index else base + index}").geturl()


@pytest.fixture(scope="module")
def redis_url(shared_redis_url: str) -> str:
    """The shared Redis database, emptied for each module: the tests of one module (which run one after another)
    then see only their own keys, whichever modules ran before."""
    client = redis.Redis.from_url(shared_redis_url)
    client.flushdb()
    client.close()
    return shared_redis_url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@contextmanager
def archive_database(backend: str, directory: Path) -> Iterator[str]:
    """An empty archive database: a SQLite file in `directory`, or a private schema of the PostgreSQL at
    VISIONQ_TEST_DATABASE_URL (CI sets postgresql+psycopg://postgres@127.0.0.1:5432/test), dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'archive.sqlite3'}"
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


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty archive database on SQLite, then on PostgreSQL (`archive_database`)."""
    with archive_database(request.param, tmp_path) as url:
        yield url


StackFactory = Callable[..., tuple[Settings, WorkerProcess, ApiServer]]
RedisFactory = Callable[[str], str]


@pytest.fixture(scope="session")
def new_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisFactory]:
    """A private redis-server for each caller: a stack's own namespace. Its queues, processing set, dead letters,
    statistics and worker heartbeats are then its own, whatever ran before it. Servers still running at the end of
    the session are stopped then."""
    servers: list[EmbeddedRedis] = []

    def factory(name: str) -> str:
        server = EmbeddedRedis(tmp_path_factory.mktemp(f"redis-{name}"), port=free_port(), persistent=False)
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def start_session_stack(new_redis: RedisFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackFactory]:
    """Start a worker and an API sharing settings, on a Redis server and an archive (SQLite in its data
    directory) of their own. Those still running at the end of the session are stopped then; tests start theirs
    with `start_stack`."""
    started: list[tuple[WorkerProcess, ApiServer]] = []

    def factory(name: str, **overrides: Any) -> tuple[Settings, WorkerProcess, ApiServer]:
        values = {
            **FAST_RECOVERY,
            "model_cache_dir": model_cache(),
            "queue": f"visionq-test-{name}",
            "data_dir": tmp_path_factory.mktemp(name),
            **overrides,
        }
        values.setdefault("redis_url", new_redis(name))
        settings = Settings(**values)
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


@pytest.fixture(scope="session")
def stack(start_session_stack: StackFactory) -> tuple[Settings, WorkerProcess, ApiServer]:
    """The shared stack: a `solo` worker (jobs run in its main process) with every exact built-in model warm, and
    Lite0's int8 build.
    The other stacks take the default pool, `auto`: `solo` for FAST_RECOVERY's one job at a time."""
    return start_session_stack("main", warm_models=[*EXACT_BUILTINS, "efficientnet-lite0-int8"], worker_pool="solo")


@pytest.fixture
def stack_redis(stack: tuple[Settings, WorkerProcess, ApiServer]) -> Iterator[redis.Redis]:
    """A client of the shared stack's own Redis."""
    client = redis.Redis.from_url(stack[0].state_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def api(stack: tuple[Settings, WorkerProcess, ApiServer]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack[2].url, timeout=30) as client:
        yield client
