"""What a job costs a Redis Cluster that holds job state, and how evenly it spreads over the masters.

    .venv/bin/python bench/cluster_redis.py [--jobs 300] [--clients 4] [--json var/bench/cluster_redis.json]

Starts a real cluster (3 masters, 3 replicas: tests/integration/topologies.py), a `visionq worker` and a `visionq api`
on it with the broker on the machine's RabbitMQ (VISIONQ_TEST_AMQP_URL) and images in a folder, warms them up, then
submits `--jobs` cat images from `--clients` clients and waits for every one to complete, then leaves the service idle
for a while. Reported from each node's `INFO`: commands, bytes in and out, and CPU seconds per job, for the masters
together and for each, and for the replicas (which receive the masters' writes); and the masters' idle load per
second (heartbeats, queue passes, sweeps), taken off to give what one more job costs. The CPU figures vary with the
machine, the commands and bytes do not.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests")]

from factories import cat_variants  # noqa: E402
from integration.stack import (  # noqa: E402
    FAST_RECOVERY,
    RABBITMQ,
    ApiProcess,
    WorkerProcess,
    delete_broker_queues,
    wait_terminal,
)
from integration.topologies import ClusterSet, Server  # noqa: E402
from visionq.settings import Settings  # noqa: E402

COUNTERS = ("total_commands_processed", "total_net_input_bytes", "total_net_output_bytes")
WARM_UP = 20
#: Seconds of no jobs after the run, to tell the service's own load from the jobs'.
IDLE_SECONDS = 10.0


def node_figures(server: Server) -> dict[str, float]:
    client = redis.Redis(port=server.port, decode_responses=True)
    try:
        info = {**client.info("stats"), **client.info("cpu")}
    finally:
        client.close()
    figures = {name: float(info[name]) for name in COUNTERS}
    figures["cpu_seconds"] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return figures


def submit_all(url: str, image: bytes, jobs: int, clients: int) -> None:
    def one(_: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            answer = http.post("/classify", files={"file": ("cat.jpg", image)})
            answer.raise_for_status()
            if wait_terminal(http, answer.json()["job_id"], timeout=300)["status"] != "completed":
                raise RuntimeError(f"job {answer.json()['job_id']} did not complete")

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(jobs)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    image = cat_variants()["jpeg"]
    root = Path(tempfile.mkdtemp(prefix="visionq-cluster-bench-"))
    with ClusterSet(root / "cluster") as cluster:
        name = f"visionq-bench-{uuid.uuid4().hex[:8]}"
        settings = Settings(
            **{**FAST_RECOVERY, "log_level": "ERROR", "worker_concurrency": 2},
            **cluster.settings(),
            broker_url=RABBITMQ,
            queue=name,
            callback_queue=f"{name}-callbacks",
            data_dir=root / "data",
            image_store="directory",  # as bench/throughput.py: images stay out of Redis
            image_dir=root / "images",
        )
        try:
            with WorkerProcess(settings), ApiProcess(settings) as api:
                submit_all(api.url, image, WARM_UP, args.clients)
                masters = cluster.masters()
                replicas = [server for server in cluster.servers if server not in masters]
                before = {server.port: node_figures(server) for server in cluster.servers}
                started = time.monotonic()
                submit_all(api.url, image, args.jobs, args.clients)
                seconds = time.monotonic() - started
                after = {server.port: node_figures(server) for server in cluster.servers}
                time.sleep(IDLE_SECONDS)  # what the service costs with no job: heartbeats, queue passes, sweeps
                idle = {server.port: node_figures(server) for server in cluster.servers}
        finally:
            delete_broker_queues(settings)
    per_node = {
        port: {name: (after[port][name] - before[port][name]) / args.jobs for name in after[port]} for port in after
    }
    per_second = {
        port: {name: (idle[port][name] - after[port][name]) / IDLE_SECONDS for name in idle[port]} for port in idle
    }
    masters_idle = _total([per_second[server.port] for server in masters])
    masters_per_job = _total([per_node[server.port] for server in masters])
    rate = args.jobs / seconds
    report: dict[str, Any] = {
        "jobs": args.jobs,
        "seconds": round(seconds, 1),
        "masters": masters_per_job,
        "each_master": [per_node[server.port] for server in masters],
        "replicas": _total([per_node[server.port] for server in replicas]),
        "masters_idle_per_second": masters_idle,
        # The idle load spread over the jobs of the run, taken off: what one more job costs.
        "masters_marginal": {name: masters_per_job[name] - masters_idle[name] / rate for name in masters_per_job},
    }
    sys.stdout.write(_summary(report) + "\n")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def _total(nodes: list[dict[str, float]]) -> dict[str, float]:
    return {name: sum(node[name] for node in nodes) for name in nodes[0]}


def _summary(report: dict[str, Any]) -> str:
    def line(figures: dict[str, float]) -> str:
        return (
            f"{figures['total_commands_processed']:.0f} commands, "
            f"{figures['total_net_input_bytes'] / 1024:.1f} KiB in, {figures['total_net_output_bytes'] / 1024:.1f} KiB "
            f"out, {figures['cpu_seconds'] * 1000:.2f} ms CPU"
        )

    shares = [master["total_commands_processed"] for master in report["each_master"]]
    spread = ", ".join(f"{share / sum(shares):.0%}" for share in shares)
    return (
        f"{report['jobs']} jobs in {report['seconds']} s; per job:\n"
        f"  masters: {line(report['masters'])} (commands per master: {spread})\n"
        f"  replicas: {line(report['replicas'])}\n"
        f"  masters, one more job (the idle load per second, {line(report['masters_idle_per_second'])}, taken off): "
        f"{line(report['masters_marginal'])}"
    )


if __name__ == "__main__":
    main()
