"""Real parts for integration tests: a Redis server, a Celery worker process, the API on a port.

Redis is the machine's own server on a dedicated database when VISIONQ_TEST_REDIS_URL is set
(CI sets redis://127.0.0.1:6379/15), otherwise a private redis-server started for the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

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


StackFactory = Callable[..., tuple[Settings, WorkerProcess, ApiServer]]


@pytest.fixture(scope="session")
def start_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackFactory]:
    """Start a worker and an API sharing settings; each stack gets its own queue."""
    started: list[tuple[WorkerProcess, ApiServer]] = []

    def factory(name: str, **overrides: Any) -> tuple[Settings, WorkerProcess, ApiServer]:
        data_dir: Path = tmp_path_factory.mktemp(name)
        values = {**FAST_RECOVERY, "redis_url": redis_url, "queue": f"visionq-test-{name}", "data_dir": data_dir}
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


@pytest.fixture(scope="session")
def stack(start_stack: StackFactory) -> tuple[Settings, WorkerProcess, ApiServer]:
    """The shared stack: a `solo` worker (jobs run in its main process) with every built-in model warm.
    The stacks of the priority and kill tests use the default prefork pool."""
    return start_stack("main", warm_models=["*"], worker_pool="solo")


@pytest.fixture
def api(stack: tuple[Settings, WorkerProcess, ApiServer]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack[2].url, timeout=30) as client:
        yield client
