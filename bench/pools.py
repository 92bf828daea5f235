"""The worker alone, pool against pool: how fast one worker drains a queue of jobs on every core of this machine.

    .venv/bin/python bench/pools.py [--jobs 200] [--rounds 2] [--pools threads prefork] [--concurrency N]

For each round and pool: an embedded Redis and `visionq api` (images in a folder), `--jobs` jobs of the bench's
~500 KB photo queued with no worker running, then one `visionq worker --pool POOL` started and the queue drained.
The rate is the completions per second after the first tenth of them (model loading and warm-up excluded), from
the jobs' own `completed_at`. Pools alternate within a round, so a machine that slows down mid-run slows both.
This measures what `throughput.py` cannot on one pinned core: the pools side by side on several cores, where
processes and threads differ (the GIL, one model per process or per worker). It prints a line per drain and
writes `var/bench/pools.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from throughput import photo

from visionq.embedded import EmbeddedRedis, free_port

#: Seconds the API may take to answer, and a drain to end.
START_TIMEOUT, DRAIN_TIMEOUT = 60.0, 900.0
TERMINAL = ("completed", "failed", "cancelled")


def drain(pool: str, *, jobs: int, concurrency: int | None, image: bytes, model: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="visionq-pools-") as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis:
        port = free_port()
        env = service_env(tmp, redis.url, model=model, max_queued=jobs + 1) | {"VISIONQ_WORKER_POOL": pool}
        if concurrency:
            env["VISIONQ_WORKER_CONCURRENCY"] = str(concurrency)
        quiet = subprocess.DEVNULL
        api = subprocess.Popen(
            [sys.executable, "-m", "visionq", "api", "--port", str(port)], env=env, stdout=quiet, stderr=quiet
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                _wait(lambda: _answers(client), START_TIMEOUT, "the API")
                files = {"file": ("photo.jpg", image, "image/jpeg")}
                ids = [client.post("/classify", files=files).raise_for_status().json()["job_id"] for _ in range(jobs)]
                worker = subprocess.Popen(
                    [sys.executable, "-m", "visionq", "worker"],
                    env=env,
                    start_new_session=True,
                    stdout=quiet,
                    stderr=quiet,
                )
                try:
                    _wait(lambda: _all_ended(client, ids), DRAIN_TIMEOUT, "the queue to drain")
                finally:
                    worker.terminate()
                    worker.wait(60)
                results = [client.get(f"/result/{job_id}").json() for job_id in ids]
        finally:
            api.terminate()
            api.wait(60)
    ends = sorted(_seconds(result["completed_at"]) for result in results if "predictions" in result)
    skip = len(ends) // 10
    return {
        "pool": pool,
        "jobs": jobs,
        "completed": len(ends),
        "jobs_per_s": (len(ends) - 1 - skip) / (ends[-1] - ends[skip]) if len(ends) > skip + 1 else float("nan"),
    }


def service_env(tmp: str, redis_url: str, *, model: str, max_queued: int) -> dict[str, str]:
    """The environment of a bench's `visionq api` and `visionq worker`: this process's, without its visionq
    settings, plus a Redis, a data and image folder in `tmp`, no authentication, rate limit or result cache, one
    warm model."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("VISIONQ_")} | {
        "VISIONQ_REDIS_URL": redis_url,
        "VISIONQ_DATA_DIR": f"{tmp}/data",
        "VISIONQ_IMAGE_STORE": "directory",
        "VISIONQ_IMAGE_DIR": f"{tmp}/images",
        "VISIONQ_AUTH": "off",
        "VISIONQ_RATE_LIMIT_IP": "0",
        "VISIONQ_LOG_LEVEL": "WARNING",
        "VISIONQ_DEFAULT_MODEL": model,
        "VISIONQ_WARM_MODELS": json.dumps([model]),
        "VISIONQ_MAX_QUEUED_JOBS": str(max_queued),
        "VISIONQ_RESULT_CACHE": "false",  # every job sends the same photo, and each must run
    }
    model_cache = os.environ.get("VISIONQ_MODEL_CACHE_DIR")
    if model_cache:
        env["VISIONQ_MODEL_CACHE_DIR"] = model_cache
    return env


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.HTTPError:
        return False


def _all_ended(client: httpx.Client, ids: list[str]) -> bool:
    if client.get(f"/status/{ids[-1]}").json()["status"] not in TERMINAL:
        return False
    return all(client.get(f"/status/{job_id}").json()["status"] in TERMINAL for job_id in ids)


def _wait(ready: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.5)


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pools", nargs="+", default=["threads", "prefork"], choices=["threads", "prefork", "solo"])
    parser.add_argument("--concurrency", type=int, help="jobs at once (default: the worker's, one per CPU)")
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--out", type=Path, default=Path("var/bench/pools.json"))
    args = parser.parse_args()
    image, runs = photo(), []
    for _ in range(args.rounds):
        for pool in args.pools:
            run = drain(pool, jobs=args.jobs, concurrency=args.concurrency, image=image, model=args.model)
            runs.append(run)
            print(f"{pool:8} {run['completed']}/{run['jobs']} completed, {run['jobs_per_s']:.1f} jobs/s", flush=True)  # noqa: T201
    summary = {pool: statistics.mean(r["jobs_per_s"] for r in runs if r["pool"] == pool) for pool in args.pools}
    print("mean     " + ", ".join(f"{pool} {rate:.1f} jobs/s" for pool, rate in summary.items()))  # noqa: T201
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpus": os.cpu_count(), "runs": runs, "mean": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
