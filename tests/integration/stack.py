"""A real visionq stack for integration tests: a worker subprocess and the API on a real port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Self

import httpx
import redis
import uvicorn
from kombu import Connection
from pydantic import SecretStr
from websockets.sync.client import connect

from environment import process_environ
from ports import free_port
from visionq.api.app import server_config
from visionq.connections import sync_redis
from visionq.jobs import keys
from visionq.jobs.publisher import broker_queue
from visionq.jobs.records import isoformat, utcnow
from visionq.settings import Settings

#: Seconds a worker may take to start and load its models: the session prepared their exports beforehand
#: (tests/conftest.py), so this is loading, not exporting; well within a test's 120 s budget, set-up included.
WORKER_START_TIMEOUT = 60.0
#: Seconds a `visionq api` process may take to answer its first request.
API_START_TIMEOUT = 60.0

#: Worker settings that keep failure tests short: fast redelivery, heartbeat and sweep.
FAST_RECOVERY: dict[str, Any] = {
    "visibility_timeout": 2,
    "stale_job_after": 30,
    "heartbeat_interval": 0.5,
    "sweep_interval": 1.0,
    "archive_interval": 0.2,
    "archive_settle": 0,
    # Tests poll fast from one address; the rate-limit tests set their own limits.
    "rate_limit_ip": 0,
    "rate_limit_user": 0,
    "rate_limit_admin": 0,
    "retry_backoff": 0.2,
    # The same cat image is sent again and again: each job must really run (tests/integration/test_result_cache.py
    # turns the cache on).
    "result_cache": False,
    # One pool process per worker, whatever the machine: the tests reason about which process has which job.
    "worker_concurrency": 1,
    "log_level": "WARNING",
}


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def service_ready(url: str) -> bool:
    """Whether the service at `url` says it is ready (Redis, a worker, the default model)."""
    try:
        return bool(httpx.get(f"{url}/health/ready", timeout=2).json()["status"] == "ok")
    except httpx.HTTPError:
        return False


def serving(url: str) -> bool:
    """Whether the process at `url` answers its liveness check (ready or not)."""
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class WorkerProcess:
    """`visionq worker` in its own process group, so a test can kill it and everything it forked."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = process_environ()
        for name, value in self.settings.model_dump(mode="json").items():
            secret = getattr(self.settings, name)
            if isinstance(secret, SecretStr):  # dumped as "**********"
                value = secret.get_secret_value()
            if value is not None:
                env[f"VISIONQ_{name.upper()}"] = value if isinstance(value, str) else _json(value)
        return env

    def start(self) -> None:
        started = isoformat(utcnow())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "visionq", "worker"], env=self.env(), start_new_session=True
        )
        client = sync_redis(self.settings, decode=True)  # through the sentinels, where there are some
        try:
            wait_for(lambda: self._ready(client, started), WORKER_START_TIMEOUT, "the worker's heartbeat")
        finally:
            client.close()

    def _ready(self, client: redis.Redis, since: str) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, "the worker exited during start-up"
        for key in client.scan_iter(match=f"{keys.WORKER_PREFIX}*"):
            beat = {str(k): str(v) for k, v in client.hgetall(key).items()}
            if beat.get("queue") == self.settings.queue and beat.get("started_at", "") >= since:
                return True
        return False

    def kill(self) -> None:
        """SIGKILL the worker and its pool children: no warm shutdown, no acknowledgement."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class CallbackWorkerProcess(WorkerProcess):
    """`visionq worker --callbacks`: delivers callbacks; start() waits for its heartbeat key."""

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "visionq", "worker", "--callbacks"], env=self.env(), start_new_session=True
        )
        beat = keys.deliverer(f"{socket.gethostname()}:{self.process.pid}")
        client = sync_redis(self.settings)
        try:
            wait_for(lambda: self._alive() and client.exists(beat), WORKER_START_TIMEOUT, "the callbacks heartbeat")
        finally:
            client.close()

    def _alive(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, "the callbacks worker exited during start-up"
        return True


class ApiProcess(WorkerProcess):
    """`visionq api` as its own process on a free loopback port (WorkerProcess lends it the environment)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, ready: Callable[[str], bool] = service_ready) -> None:
        """Start it and wait until `ready(url)`: by default until the whole service is ready."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "visionq", "api", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env(),
            start_new_session=True,
        )
        wait_for(lambda: ready(self.url), API_START_TIMEOUT, f"visionq api on port {self.port}", 0.1)


class ApiServer:
    """The API under uvicorn in a thread, on a free loopback port (httpx's TestServer pattern)."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        config = server_config(settings.model_copy(update={"host": "127.0.0.1"}), port=self.port)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="visionq-test-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        wait_for(lambda: self.server.started, 30, "the API to start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def __enter__(self) -> ApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _json(value: object) -> str:
    import json

    return json.dumps(value)


def submit(api: Any, image: bytes, filename: str = "image", **fields: Any) -> Any:
    """POST /classify and return the httpx response."""
    data = {name: str(value) for name, value in fields.items()}
    return api.post("/classify", files={"file": (filename, image)}, data=data)


def submitted_twice_and_followed(
    server: ApiServer, image: bytes
) -> tuple[httpx.Response, httpx.Response, list[dict[str, Any]]]:
    """`image` submitted twice with one Idempotency-Key, and the job followed on its WebSocket until it closes: the
    two answers and every message."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        key = {"Idempotency-Key": f"twice-{uuid.uuid4()}"}
        first = http.post("/classify", files={"file": ("cat.jpg", image)}, headers=key)
        again = http.post("/classify", files={"file": ("cat.jpg", image)}, headers=key)
    with connect(f"ws://127.0.0.1:{server.port}/ws/{first.json()['job_id']}", open_timeout=10) as ws:
        messages = [json.loads(message) for message in ws]
    return first, again, messages


def wait_terminal(api: Any, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll /status until the job is terminal; return the last status body."""

    def terminal() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/status/{job_id}").json()
        return body if body["status"] in ("completed", "failed", "cancelled", "expired") else None

    result: dict[str, Any] = wait_for(terminal, timeout, f"job {job_id} to finish", interval=0.05)
    return result


def started_at(result: dict[str, Any]) -> float:
    """When a worker started a job, from its result: its creation plus its time in the queue."""
    return datetime.fromisoformat(result["created_at"]).timestamp() + float(result["metadata"]["queue_time"])


def inference_count(api: Any, model_ref: str) -> float:
    """`visionq_model_inference_seconds_count` of one model version, 0 before its first inference."""
    prefix = f'visionq_model_inference_seconds_count{{model_version="{model_ref}"}} '
    lines = [line for line in api.get("/metrics").text.splitlines() if line.startswith(prefix)]
    return float(lines[0].split()[-1]) if lines else 0.0


#: The machine's RabbitMQ (CI's too); VISIONQ_TEST_AMQP_URL names another.
RABBITMQ = os.environ.get("VISIONQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def delete_broker_queues(settings: Settings, *queues: str) -> None:
    """Delete a stack's queues (its own and `queues`) from its RabbitMQ broker, once their consumers have stopped (a
    running one would declare its queue again); a Redis broker's go with the server."""
    broker = settings.broker
    if not broker.startswith("amqp"):
        return
    with Connection(broker) as connection:
        channel = connection.channel()
        for name in (settings.queue, settings.callback_queue, *queues):
            broker_queue(name, broker)(channel).delete()
