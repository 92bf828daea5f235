"""Faults of the store under load: a real redis-server with AOF, stopped and started again under the
service's feet, with a real worker process and the API. Nothing accepted may be lost.

Each test has a Redis server of its own (the shared one cannot be restarted).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from factories import cat_variants
from integration.stack import FAST_RECOVERY, ApiProcess, ApiServer, WorkerProcess, serving, submit, wait_for
from visionq.embedded import EmbeddedRedis
from visionq.settings import Settings

CAT = cat_variants()["jpeg"]
#: Seconds every accepted job may take to reach a terminal state once Redis is back.
SETTLE_TIMEOUT = 120.0
#: Seconds Redis stays down in the restart test.
DOWN_FOR = 1.0


class Service:
    """A private AOF Redis, one prefork worker and the API, over a shared data directory."""

    def __init__(self, root: Path) -> None:
        self.redis = EmbeddedRedis(root / "redis", persistent=True)
        self.settings = Settings(
            **{**FAST_RECOVERY, "worker_concurrency": 2},
            # A fetch answered just as Redis stops loses its message (see JobTracker.lost_messages): queue such
            # jobs again within the test's time rather than after the default two minutes.
            requeue_lost_after=5.0,
            redis_url=self.redis.url,
            data_dir=root / "data",
            queue="visionq-test-chaos",
            callback_queue="visionq-test-chaos-callbacks",
        )
        self.worker = WorkerProcess(self.settings)
        self.api = ApiServer(self.settings)

    def start(self) -> None:
        self.redis.start()
        self.worker.start()
        self.api.start()

    def stop(self) -> None:
        self.api.stop()
        self.worker.stop()
        self.redis.stop()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path)
    running.start()
    yield running
    running.stop()


def statuses(api: httpx.Client, job_ids: list[str]) -> dict[str, str]:
    found = {}
    for job_id in job_ids:
        answer = api.get(f"/status/{job_id}")
        found[job_id] = answer.json()["status"] if answer.status_code == 200 else f"HTTP {answer.status_code}"
    return found


@pytest.mark.timeout(60 + 60 + SETTLE_TIMEOUT + 60)
def test_a_redis_restart_with_aof_under_load_loses_no_accepted_job(service: Service) -> None:
    accepted: list[str] = []
    refused: list[int] = []
    stop = threading.Event()

    def submitter() -> None:
        with httpx.Client(base_url=service.api.url, timeout=10) as api:
            while not stop.is_set():
                try:
                    answer = submit(api, CAT, "cat.jpg")
                except httpx.TransportError:
                    refused.append(0)
                    continue
                if answer.status_code == 202:
                    accepted.append(answer.json()["job_id"])
                else:
                    assert answer.status_code == 503, answer.text  # retryable, never anything else
                    assert answer.headers["retry-after"]
                    refused.append(answer.status_code)
                time.sleep(0.02)

    threads = [threading.Thread(target=submitter) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(accepted) >= 10, 60, "jobs before the restart")
    service.redis.stop()  # SIGTERM: Redis flushes its AOF, as on a planned restart
    time.sleep(DOWN_FOR)
    service.redis.start()
    before = len(accepted)
    wait_for(lambda: len(accepted) >= before + 10, 60, "jobs accepted after the restart")
    stop.set()
    for thread in threads:
        thread.join(30)

    with httpx.Client(base_url=service.api.url, timeout=10) as api:

        def all_terminal() -> bool:
            found = statuses(api, accepted)
            return all(status in ("completed", "failed", "cancelled") for status in found.values())

        try:
            wait_for(all_terminal, SETTLE_TIMEOUT, "every accepted job to finish", interval=0.5)
        except AssertionError:
            unfinished = {job: s for job, s in statuses(api, accepted).items() if s not in ("completed", "failed")}
            pytest.fail(f"{len(unfinished)} of {len(accepted)} accepted jobs never finished: {unfinished}")
        final = statuses(api, accepted)
    assert set(final.values()) == {"completed"}, {job: s for job, s in final.items() if s != "completed"}
    assert refused, "the submitters met the outage (else the test proved nothing)"


def test_with_redis_stopped_submits_get_503_and_all_recovers_when_it_returns(service: Service) -> None:
    with httpx.Client(base_url=service.api.url, timeout=5) as api:  # a hang would fail at 5 s
        service.redis.stop()
        down = submit(api, CAT, "cat.jpg")
        assert down.status_code == 503
        assert down.json()["code"] == "broker_unavailable"
        assert int(down.headers["retry-after"]) > 0
        ready = api.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"] == "down"

        service.redis.start()  # the same data, the same port; nothing else restarted
        back = wait_for(lambda: (answer := submit(api, CAT, "cat.jpg")).status_code == 202 and answer, 30, "a 202")
        job_id = back.json()["job_id"]
        wait_for(lambda: api.get(f"/status/{job_id}").json()["status"] == "completed", 60, "the worker to reconnect")


def test_an_api_restart_under_load_loses_no_accepted_job(tmp_path: Path) -> None:
    """SIGTERM the API process while clients submit, then start it again on the same port: every submit got
    a 202 for a job that then completed, or an answer it can retry (503, or no connection)."""
    with EmbeddedRedis(tmp_path / "redis", persistent=True) as redis:
        settings = Settings(
            **FAST_RECOVERY,
            redis_url=redis.url,
            data_dir=tmp_path / "data",
            queue="visionq-test-api-restart",
            callback_queue="visionq-test-api-restart-callbacks",
        )
        worker, api = WorkerProcess(settings), ApiProcess(settings)
        worker.start()
        api.start()
        accepted: list[str] = []
        retryable: list[str] = []
        stop = threading.Event()

        def submitter() -> None:
            while not stop.is_set():
                try:
                    with httpx.Client(base_url=api.url, timeout=10) as client:
                        answer = submit(client, CAT, "cat.jpg")
                except httpx.TransportError as exc:
                    retryable.append(type(exc).__name__)
                    time.sleep(0.05)
                    continue
                if answer.status_code == 202:
                    accepted.append(answer.json()["job_id"])
                else:
                    assert answer.status_code == 503, answer.text
                    retryable.append("503")

        threads = [threading.Thread(target=submitter) for _ in range(2)]
        try:
            for thread in threads:
                thread.start()
            wait_for(lambda: len(accepted) >= 10, 60, "jobs before the restart")
            api.stop()  # SIGTERM: uvicorn finishes the requests in flight, then exits
            api.start()  # the same port
            before = len(accepted)
            wait_for(lambda: len(accepted) >= before + 10, 60, "jobs accepted after the restart")
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)

        with httpx.Client(base_url=api.url, timeout=10) as client:

            def all_completed() -> bool:
                return set(statuses(client, accepted).values()) == {"completed"}

            wait_for(all_completed, SETTLE_TIMEOUT, "every accepted job to complete", interval=0.5)
        api.stop()
        worker.stop()
    assert retryable, "the clients met the restart (else the test proved nothing)"


def test_sigterm_on_the_api_closes_websockets_with_1012_and_exits(tmp_path: Path) -> None:
    """No worker: the job stays pending, so its WebSocket is open when the API is told to stop."""
    with EmbeddedRedis(tmp_path / "redis") as redis:
        settings = Settings(**FAST_RECOVERY, redis_url=redis.url, data_dir=tmp_path / "data", queue="visionq-test-ws")
        api = ApiProcess(settings)
        api.start(ready=serving)
        try:
            with httpx.Client(base_url=api.url, timeout=10) as client:
                job_id = submit(client, CAT, "cat.jpg").json()["job_id"]
            with connect(f"ws://127.0.0.1:{api.port}/ws/{job_id}", open_timeout=10) as ws:
                assert json.loads(ws.recv(timeout=10))["status"] == "pending"
                assert api.process is not None
                os.kill(api.process.pid, signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=10)
            # It shut down at once (nothing held it open), then re-raised SIGTERM, as uvicorn does.
            assert api.process.wait(15) == -signal.SIGTERM
        finally:
            api.stop()

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1012, "service restart: the client reconnects elsewhere"
