"""`visionq serve`: the whole service on one machine, stopped cleanly by Ctrl-C or SIGTERM.

Runs an embedded Redis server (unless `VISIONQ_REDIS_URL` is set), one worker and one callbacks
worker as child processes in their own process groups (restarted if they die), and the API in
this process. Uploads wait in `data_dir/images` (`VISIONQ_IMAGE_STORE=directory`) unless the
environment names another image store. Uvicorn owns SIGINT/SIGTERM; when it returns, the worker
gets a warm shutdown and then Redis stops, so nothing is left running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import uvicorn
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from visionq.api.app import server_config
from visionq.embedded import EmbeddedRedis
from visionq.settings import Settings

log = logging.getLogger(__name__)

#: Seconds a worker gets to finish its job after SIGTERM before its process group is killed.
WORKER_STOP_TIMEOUT = 15.0
#: Where `serve` keeps the callback signing secret it made, in the data directory.
CALLBACK_SECRET_FILE = "callback-secret"
#: Seconds between restarts of a worker that keeps dying.
WORKER_RESTART_DELAY = 2.0
#: Seconds `serve` waits for the whole service to be ready before it says where it stands anyway (a first start
#: on a slow machine may export the model to ONNX first).
READY_WAIT = 120.0


class WorkerProcess:
    """`visionq worker` as a supervised child process."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.env = env
        self.args = args
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="visionq-worker-watch", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._watcher.start()

    def _spawn(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "visionq", "worker", *self.args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _watch(self) -> None:
        while not self._stopping.is_set():
            process = self._process
            if process is not None and process.poll() is not None and not self._stopping.is_set():
                log.error("worker exited with code %s; restarting it", process.returncode)
                if self._stopping.wait(WORKER_RESTART_DELAY):
                    return
                self._spawn()
            self._stopping.wait(0.5)

    def stop(self) -> None:
        self._stopping.set()
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(WORKER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("worker did not stop in %.0fs; killing it", WORKER_STOP_TIMEOUT)
        # Prefork children share the group: make sure none outlives the supervisor.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def callback_secret(data_dir: Path) -> str:
    """The secret that signs callbacks when VISIONQ_CALLBACK_SECRET is unset: made on first start and kept,
    readable by this user only, in `data_dir/callback-secret`, so that receivers can be set up once."""
    path = data_dir / CALLBACK_SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(32))
        log.info("made a callback signing secret in %s (set VISIONQ_CALLBACK_SECRET to use your own)", path)
    return path.read_text().strip()


def local_url(host: str, port: int) -> str:
    """Where this machine reaches the API bound to `host`: a wildcard address is reached on loopback."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def announce_when_ready(url: str, say: Callable[[str], None], stopping: threading.Event) -> None:
    """Say that the service is ready once `/health/ready` says so: the API listens a few seconds before the worker
    has loaded its model, and a user who took a first line as the go-ahead saw a first job wait for no reason."""
    deadline = time.monotonic() + READY_WAIT
    checks: object = "no answer"
    while not stopping.wait(0.25):
        try:
            body = httpx.get(f"{url}/health/ready", timeout=2, trust_env=False).json()
            if body["status"] == "ok":
                say(f"visionq ready on {url}  (API docs at {url}/docs, Ctrl-C to stop)")
                return
            checks = body["checks"]
        except (httpx.HTTPError, ValueError, KeyError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            say(f"visionq on {url}, not ready after {READY_WAIT:.0f} s: {checks} (GET /health/ready)")
            return


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(settings: Settings, announce: Callable[[str], None] = print) -> None:
    """Run until SIGINT or SIGTERM, and `announce` the address once the service is ready. Uvicorn re-raises the
    signal it caught once it has shut down; both then surface here as KeyboardInterrupt, so the worker and Redis
    are always stopped."""
    signal.signal(signal.SIGTERM, _interrupt)
    with ExitStack() as stack:
        redis_url = settings.redis_url
        if redis_url is None and settings.redis_sentinels:  # the sentinels name the server
            redis_url = settings.state_url
        if redis_url is None:
            redis_url = stack.enter_context(EmbeddedRedis(settings.data_dir / "redis", unix_socket=True)).url
            log.info("embedded Redis listening at %s (data in %s)", redis_url, settings.data_dir / "redis")
        secret = settings.callback_secret or SecretStr(callback_secret(settings.data_dir))
        # One machine: uploads wait in a folder rather than pass through Redis, unless told otherwise.
        images = settings.image_store if "image_store" in settings.model_fields_set else "directory"
        settings = settings.model_copy(
            update={"redis_url": redis_url, "callback_secret": secret, "image_store": images}
        )
        log.info("job archive: %s", make_url(settings.archive_url).render_as_string(hide_password=True))
        env = {
            **os.environ,
            "VISIONQ_REDIS_URL": redis_url,
            "VISIONQ_CALLBACK_SECRET": secret.get_secret_value(),
            "VISIONQ_IMAGE_STORE": images,
            "VISIONQ_IMAGE_DIR": str(settings.images_path),
        }
        for worker in (WorkerProcess(env), WorkerProcess(env, "--callbacks")):
            worker.start()
            stack.callback(worker.stop)
        stopping = threading.Event()
        url = local_url(settings.host, settings.port)
        threading.Thread(
            target=announce_when_ready, args=(url, announce, stopping), name="visionq-announce", daemon=True
        ).start()
        stack.callback(stopping.set)
        uvicorn.Server(server_config(settings)).run()
