"""Worker heartbeats against a real Redis: written by a worker process, read back by the API's side."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import redis
import redis.asyncio

from integration.conftest import StackFactory
from integration.stack import wait_for
from visionq.jobs import heartbeats, keys
from visionq.jobs.heartbeats import Heartbeat
from visionq.settings import Settings


def _live(redis_url: str) -> list[Heartbeat]:
    async def read() -> list[Heartbeat]:
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        try:
            return await heartbeats.live(client)
        finally:
            await client.aclose()

    return asyncio.run(read())


def test_a_beat_is_read_back_whole_and_forgotten_when_the_process_goes(redis_url: str) -> None:
    host = f"host-{uuid.uuid4().hex[:8]}"
    beat = Heartbeat(
        worker_id=f"{host}:42",
        hostname=host,
        pid=42,
        queue="visionq-test-heartbeats",
        started_at="2026-12-02T00:00:00.000Z",
        seen_at="2026-12-02T00:00:01.000Z",
        models=["efficientnet-lite0@1"],
        load_seconds={"efficientnet-lite0@1": 1.5},
        exports={"efficientnet-lite0@1": {"runtime": "onnx", "agreement": 1.0, "sample": 64}},
        jobs_done=7,
        pool="solo",
        concurrency=1,
    )
    client = redis.Redis.from_url(redis_url)

    heartbeats.beat(client, beat, interval=5.0)
    seen = [b for b in _live(redis_url) if b.worker_id == beat.worker_id]
    alive = heartbeats.on_host(client, host), heartbeats.on_host(client, host, callbacks=True)
    ttl = client.ttl(keys.worker(beat.worker_id))
    heartbeats.forget(client, beat.worker_id)
    gone = [b for b in _live(redis_url) if b.worker_id == beat.worker_id]
    counted = client.zscore(keys.WORKERS_SEEN, beat.worker_id)
    client.close()

    assert seen == [beat]
    assert alive == (True, False), "a worker is no callbacks worker"
    assert 0 < ttl <= 5 * keys.HEARTBEAT_MISSES + 1
    assert (gone, counted) == ([], None)


def test_the_workers_list_says_how_each_worker_process_runs_its_jobs(
    api: httpx.Client, stack: tuple[Settings, Any, Any]
) -> None:
    workers = [w for w in api.get("/admin/workers").json() if w["queue"] == stack[0].queue]

    assert [(w["pool"], w["concurrency"]) for w in workers] == [("solo", 1)]


def test_a_worker_whose_archive_interval_is_long_still_beats_at_its_heartbeat_interval(
    start_stack: StackFactory,
) -> None:
    # The archiver's interval was the tick of every chore: 30 s between beats, and the worker counted dead after
    # 1.5 s (three heartbeat intervals) for most of them.
    settings, _, _ = start_stack("long-archive-interval", heartbeat_interval=0.5, archive_interval=30)
    assert settings.redis_url is not None
    redis_url = settings.redis_url
    seen: list[str] = []

    def beat_again() -> bool:
        beats = [b.seen_at for b in _live(redis_url) if b.queue == settings.queue]  # [] once it expired
        if beats and (not seen or seen[-1] != beats[0]):
            seen.append(beats[0])
        return len(seen) >= 3

    wait_for(beat_again, 10, "the worker's next two heartbeats")
