"""The embedded Redis of `visionq serve` on its Unix socket: owner only, no TCP port, and a socket path that Linux
would refuse moved to a private folder that goes with the server."""

from __future__ import annotations

import stat
from pathlib import Path

import psutil
import redis

from visionq.embedded import MAX_SOCKET_PATH, EmbeddedRedis


def _listening_ports(pid: int) -> list[int]:
    return [c.laddr.port for c in psutil.Process(pid).net_connections("inet") if c.status == psutil.CONN_LISTEN]


def test_a_unix_socket_server_listens_in_its_data_dir_for_its_user_alone_and_on_no_port(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis", persistent=False, unix_socket=True) as server:
        socket = tmp_path.resolve() / "redis" / "redis.sock"
        client = redis.Redis.from_url(server.url)
        client.set("reached", "yes")

        assert server.url == f"unix://{socket}?db=0"
        assert client.get("reached") == b"yes"
        assert stat.S_ISSOCK(socket.stat().st_mode)
        assert stat.S_IMODE(socket.stat().st_mode) == 0o700, "no other user of the machine may connect"
        assert server.pid is not None
        assert _listening_ports(server.pid) == [], "no TCP port, loopback included"
        client.close()


def test_a_socket_path_too_long_for_linux_goes_to_a_private_folder_removed_at_stop(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * (MAX_SOCKET_PATH - len(str(tmp_path.resolve()))))
    with EmbeddedRedis(deep, persistent=False, unix_socket=True) as server:
        assert server.socket is not None
        folder = server.socket.parent
        assert redis.Redis.from_url(server.url).ping()
        assert folder != deep.resolve()
        assert len(str(server.socket)) <= MAX_SOCKET_PATH
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert deep.is_dir(), "the data stays in the data dir"

    assert not folder.exists()


def test_a_tcp_server_stays_on_its_loopback_port(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis", persistent=False) as server:
        assert server.pid is not None
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert _listening_ports(server.pid) == [server.port]
        assert redis.Redis.from_url(server.url).ping()
        assert server.socket is None
