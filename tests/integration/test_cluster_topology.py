"""The Redis Cluster set-up the cluster tests stand on, proved against real servers: three masters splitting every
slot, each with a replica in sync; keys spread over all three; a SIGKILLed master's replica promoted by the cluster
with its data, found by a cluster client without a restart; and the killed node back as the promoted one's replica."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS

from integration.topologies import ClusterSet

#: Keys with a hash tag each: their slots, fixed by the tags, fall to every master of the even split.
KEYS = [f"visionq:{{job-{index}}}:state" for index in range(12)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterSet]:
    with ClusterSet(tmp_path) as nodes:
        yield nodes


@pytest.fixture
def client(cluster: ClusterSet) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(cluster.url, decode_responses=True)
    yield client
    client.close()


def test_three_masters_split_every_slot_each_with_a_replica_and_keys_land_on_all_of_them(
    cluster: ClusterSet, client: RedisCluster
) -> None:
    masters = cluster.masters()
    owners = cluster.slot_owners()
    for key in KEYS:
        client.set(key, key)
    holders = Counter(cluster.master_of_key(key).port for key in KEYS)
    stored = {}
    for master in masters:
        with redis.Redis(port=master.port) as direct:
            stored[master.port] = direct.dbsize()
    assert len(masters) == 3
    assert [len(cluster.replicas(master)) for master in masters] == [1, 1, 1]
    assert sorted(slot for slots in owners for slot in slots) == list(range(REDIS_CLUSTER_HASH_SLOTS))
    assert set(owners.values()) == set(masters)
    assert set(holders) == {master.port for master in masters}, "the hash tags' slots fall to every master"
    assert stored == holders, "each key is on the master of its slot"
    assert [client.get(key) for key in KEYS] == KEYS


def test_a_sigkilled_masters_replica_is_promoted_with_its_data_and_the_killed_node_rejoins_as_its_replica(
    cluster: ClusterSet, client: RedisCluster
) -> None:
    key = KEYS[0]
    victim = cluster.master_of_key(key)
    (replica,) = cluster.replicas(victim)
    with redis.Redis(port=victim.port) as master:  # WAIT counts the writes of its own connection: one pipeline
        written = master.pipeline(transaction=False).set(key, "kept").execute_command("WAIT", 1, 1000).execute()
    before = client.get(key)
    cluster.kill_master(victim)
    promoted = cluster.wait_for_failover(victim)
    # The client still maps the slot to the dead node: its first try fails to connect, it reloads the slots from a
    # node that answers and tries again, on the promoted replica.
    after_failover = client.get(key)
    rewritten = client.set(key, "written after the failover")
    cluster.restart(victim)
    with redis.Redis(port=victim.port, decode_responses=True) as restarted:
        replication = restarted.info("replication")
        on_restarted = restarted.pipeline(transaction=False).execute_command("READONLY").get(key).execute()[1]
    assert written == [True, 1], "the replica acknowledged the write before the kill"
    assert promoted is replica
    assert cluster.master_of_key(key) is promoted
    assert (before, after_failover) == ("kept", "kept"), "the cluster client found the promoted replica by itself"
    assert rewritten, "which takes writes"
    assert victim not in cluster.masters()
    assert cluster.replicas(promoted) == [victim]
    assert (replication["role"], replication["master_port"]) == ("slave", promoted.port)
    assert on_restarted == "written after the failover", "the restarted node synced from the promoted one"
