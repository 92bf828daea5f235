"""Job updates inside an API process, against a real Redis, worker and model: the process subscribes to the jobs
watched in it and to nothing else, the update that completes a job carries its result, every watcher of a job
hears every change, and a lost connection is made again without leaving a watcher behind.

Jobs stay pending without timing tricks: they go to a queue that no worker serves until the test starts one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import redis
import redis.asyncio
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from factories import cat_variants
from integration.conftest import RedisFactory
from integration.records import new_record
from integration.stack import FAST_RECOVERY, ApiServer, WorkerProcess, submit, wait_for
from tests_support import CAT_CLASSES
from visionq.api.endpoints import status as status_endpoint
from visionq.embedded import EmbeddedRedis
from visionq.jobs import keys
from visionq.jobs.events import CLIENT_NAME, RESULT_FIELD, JobEvents, JobUpdate
from visionq.settings import Settings
from visionq.wire.states import JobStatus, Stage

CAT_PNG = cat_variants()["png"]
#: Seconds a test waits for the API or Redis to reach a state it is sure to reach.
SETTLE_TIMEOUT = 10.0
#: Seconds a job may take once a worker serves its queue; also how long a watcher waits for its next message.
JOB_TIMEOUT = 60.0
#: A WebSocket re-read interval no test lasts.
NEVER = 3600.0


@pytest.fixture(scope="module")
def redis_url(new_redis: RedisFactory) -> str:
    """This module's own Redis server: its API stacks and the tests that look into their Redis share it."""
    return new_redis("events")


class Held:
    """An API on a queue that no worker serves until `release()` starts one."""

    def __init__(self, settings: Settings) -> None:
        self.server = ApiServer(settings)
        self.worker = WorkerProcess(settings)
        self.api = httpx.Client(base_url=self.server.url, timeout=30)

    def ws(self, job_id: str) -> ClientConnection:
        return connect(f"ws://127.0.0.1:{self.server.port}/ws/{job_id}", open_timeout=10)

    def release(self) -> None:
        self.worker.start()

    def close(self) -> None:
        self.api.close()
        self.worker.stop()
        self.server.stop()


def held_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory, name: str) -> Held:
    settings = Settings(
        **FAST_RECOVERY,
        redis_url=redis_url,
        queue=f"visionq-test-events-{name}",
        data_dir=tmp_path_factory.mktemp(name),
    )
    stack = Held(settings)
    stack.server.start()
    return stack


@pytest.fixture(scope="module")
def idle(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Held]:
    """A stack whose worker is never started: its jobs stay pending until cancelled."""
    stack = held_stack(redis_url, tmp_path_factory, "idle")
    yield stack
    stack.close()


@pytest.fixture
def held(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Held]:
    """A stack whose worker the test starts once its watchers are in place."""
    stack = held_stack(redis_url, tmp_path_factory, "held")
    yield stack
    stack.close()


@pytest.fixture
def push_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API's WebSockets never re-read a job of their own accord: whatever they send after their first message
    came of an update pushed to them, or of a wake-up when some may have been missed."""
    monkeypatch.setattr(status_endpoint, "WS_RESYNC_INTERVAL", NEVER)


def subscribers(client: redis.Redis, job_id: str) -> int:
    [(_, count)] = client.pubsub_numsub(keys.events(job_id))
    return int(count)


def events_db(redis_url: str) -> str:
    return str(redis.Redis.from_url(redis_url).connection_pool.connection_kwargs.get("db", 0))


def events_connections(client: redis.Redis, redis_url: str) -> list[dict[str, Any]]:
    """The job-event connections of the API processes on this test's database."""
    return [c for c in client.client_list() if c["name"] == CLIENT_NAME and c["db"] == events_db(redis_url)]


def read_to_close(ws: ClientConnection) -> list[dict[str, Any]]:
    messages = []
    while True:
        try:
            messages.append(json.loads(ws.recv(timeout=JOB_TIMEOUT)))
        except ConnectionClosed:
            return messages


def test_an_api_subscribes_to_the_jobs_watched_in_it_and_to_nothing_else(
    idle: Held, redis_client: redis.Redis, redis_url: str
) -> None:
    watched, unwatched = (submit(idle.api, CAT_PNG).json()["job_id"] for _ in range(2))

    with idle.ws(watched) as ws:
        # The first message is sent after the subscription was confirmed: no waiting needed.
        assert json.loads(ws.recv(timeout=SETTLE_TIMEOUT))["status"] == "pending"
        assert subscribers(redis_client, watched) == 1
        assert subscribers(redis_client, unwatched) == 0
        # Not PUBSUB NUMPAT: Celery's workers hold patterns of their own, and the Redis is shared.
        connections = events_connections(redis_client, redis_url)
        assert connections, "the events connection names itself"
        assert [c["psub"] for c in connections] == ["0"] * len(connections), "no pattern (job:*:events) any more"

    wait_for(lambda: subscribers(redis_client, watched) == 0, SETTLE_TIMEOUT, "the API to unsubscribe")


@pytest.mark.usefixtures("push_only")
def test_two_watchers_of_a_job_share_one_subscription_until_the_last_leaves(
    idle: Held, redis_client: redis.Redis
) -> None:
    job_id = submit(idle.api, CAT_PNG).json()["job_id"]

    with idle.ws(job_id) as first:
        first.recv(timeout=SETTLE_TIMEOUT)
        with idle.ws(job_id) as second:
            second.recv(timeout=SETTLE_TIMEOUT)
            assert subscribers(redis_client, job_id) == 1
        # The second has left; the first still hears of the job, pushed (it never re-reads it on its own).
        assert idle.api.delete(f"/jobs/{job_id}").status_code == 200
        messages = read_to_close(first)

    assert [m["status"] for m in messages] == ["cancelled", "cancelled"]
    status, outcome = messages
    assert "error" not in status, "API.md: a status body's `error` only when failed"
    assert outcome["error"]["code"] == "cancelled", "the result body says why"
    wait_for(lambda: subscribers(redis_client, job_id) == 0, SETTLE_TIMEOUT, "the API to unsubscribe")


def test_every_watcher_gets_each_status_then_the_result_the_final_update_carried(
    held: Held, redis_client: redis.Redis
) -> None:
    job_id = submit(held.api, CAT_PNG).json()["job_id"]
    observer = redis_client.pubsub()  # type: ignore[no-untyped-call]
    observer.subscribe(keys.events(job_id))
    assert observer.get_message(timeout=SETTLE_TIMEOUT)["type"] == "subscribe"

    with held.ws(job_id) as one, held.ws(job_id) as two:
        firsts = [json.loads(ws.recv(timeout=SETTLE_TIMEOUT)) for ws in (one, two)]
        held.release()
        streams = [read_to_close(ws) for ws in (one, two)]
        close_codes = [one.close_code, two.close_code]

    stored = held.api.get(f"/result/{job_id}").json()
    assert [first["status"] for first in firsts] == ["pending", "pending"]
    assert close_codes == [1000, 1000]
    for first, stream in zip(firsts, streams, strict=True):
        statuses, last = [first, *stream[:-1]], stream[-1]
        progress = [status["progress"] for status in statuses]
        assert progress == sorted(progress), f"progress went down: {progress}"
        assert statuses[-1]["status"] == "completed"
        assert all("predictions" not in status for status in statuses)
        assert last == stored
    assert stored["predictions"][0]["class_id"] in CAT_CLASSES
    final = published_until_completed(observer)
    assert json.loads(final[RESULT_FIELD]) == stored, "the completing update carries the stored result"
    observer.close()


def published_until_completed(observer: redis.client.PubSub) -> dict[str, str]:
    def completed() -> dict[str, str] | None:
        message = observer.get_message(timeout=1.0)
        update: dict[str, str] | None = (
            json.loads(message["data"]) if message and message["type"] == "message" else None
        )
        return update if update is not None and update["status"] == "completed" else None

    result: dict[str, str] = wait_for(completed, JOB_TIMEOUT, "the completing update", interval=0)
    return result


@pytest.mark.usefixtures("push_only")
def test_a_lost_connection_is_made_again_and_its_watchers_read_the_job_again(
    idle: Held, redis_client: redis.Redis, redis_url: str
) -> None:
    job_id = submit(idle.api, CAT_PNG).json()["job_id"]

    with idle.ws(job_id) as ws:
        assert json.loads(ws.recv(timeout=SETTLE_TIMEOUT))["status"] == "pending"
        lost = {c["id"] for c in events_connections(redis_client, redis_url)}
        for connection_id in lost:
            redis_client.client_kill_filter(_id=connection_id)
        # Most likely while no API is subscribed: the update is lost, and only the wake-up makes up for it (the
        # watcher is told to read the job again; it never does so of its own accord here).
        assert idle.api.delete(f"/jobs/{job_id}").status_code == 200
        messages = read_to_close(ws)
        close_code = ws.close_code

    assert close_code == 1000
    assert [m.get("stage") for m in messages] == ["cancelled", None]
    assert messages[-1]["status"] == "cancelled"
    wait_for(
        lambda: {c["id"] for c in events_connections(redis_client, redis_url)} - lost,
        SETTLE_TIMEOUT,
        "the events connection to come back",
    )


# --- JobEvents alone, on a private Redis, behind a proxy that can hold Redis's answers back ---------------------


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    with EmbeddedRedis(tmp_path, persistent=False) as server:
        yield server.url


class HeldAnswers:
    """A TCP proxy to Redis whose answers can be held back: while they are, its clients hear nothing, though Redis
    has done what they asked (which a connection of the test's own, not through the proxy, can see)."""

    def __init__(self, redis_url: str) -> None:
        target = urlsplit(redis_url)
        self._target = (target.hostname, target.port)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._pipes: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> HeldAnswers:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.close()
        for pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    async def _serve(self, from_client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        from_redis, to_redis = await asyncio.open_connection(*self._target)
        self._pipes += [
            asyncio.create_task(self._pipe(from_client, to_redis)),
            asyncio.create_task(self._pipe(from_redis, to_client, holding=True)),
        ]

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, holding: bool = False) -> None:
        try:
            while data := await source.read(65536):
                if holding:
                    await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()


@asynccontextmanager
async def job_events(url: str) -> AsyncIterator[tuple[JobEvents, redis.asyncio.Redis]]:
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    events = JobEvents(client)
    await events.start()
    try:
        assert await events.wait_subscribed(SETTLE_TIMEOUT)
        yield events, client
    finally:
        await events.stop()
        await client.aclose()


@asynccontextmanager
async def held_job_events(url: str) -> AsyncIterator[tuple[JobEvents, HeldAnswers, redis.Redis]]:
    """JobEvents connected through a `HeldAnswers` proxy; the proxy; a client of the Redis itself."""
    with redis.Redis.from_url(url, decode_responses=True) as direct:
        async with HeldAnswers(url) as proxy, job_events(proxy.url) as (events, _):
            yield events, proxy, direct


async def until_subscribers(client: redis.Redis, job_id: str, count: int) -> None:
    """Wait, while the event loop runs on, until Redis counts `count` subscribers to the job's updates."""
    await asyncio.to_thread(
        wait_for, lambda: subscribers(client, job_id) == count, SETTLE_TIMEOUT, f"{count} subscribers of {job_id}"
    )


async def settled(events: JobEvents) -> None:
    """Returns once Redis has handled every command the events connection was given before: the confirmation of
    a new subscription comes after the answers to all of them."""
    async with events.watch(str(uuid.uuid4())):
        pass


def test_watch_is_entered_only_once_redis_has_confirmed_the_subscription(private_redis: str) -> None:
    async def scenario() -> bool:
        async with held_job_events(private_redis) as (events, proxy, direct):
            entered, leave = asyncio.Event(), asyncio.Event()

            async def watch() -> None:
                async with events.watch("job-1"):
                    entered.set()
                    await leave.wait()

            proxy.hold()
            watching = asyncio.create_task(watch())
            # Redis has made the subscription and confirmed it; only the confirmation, held back, is missing.
            await until_subscribers(direct, "job-1", 1)
            entered_unconfirmed = entered.is_set()
            proxy.release()
            async with asyncio.timeout(SETTLE_TIMEOUT):
                await entered.wait()
            leave.set()
            await watching
            return entered_unconfirmed

    assert not asyncio.run(scenario()), "entered before the confirmation reached it"


def test_watchers_coming_and_going_while_redis_is_silent_leave_the_right_subscriptions(private_redis: str) -> None:
    async def scenario() -> list[int]:
        counts = []
        async with held_job_events(private_redis) as (events, proxy, direct):
            first = events.watch("job-1")
            await first.__aenter__()
            proxy.hold()
            # While the events connection hears nothing back: a watcher gives up before its subscription is
            # confirmed (no confirmation can come before the release), and job-1's only watcher leaves as another
            # comes (UNSUBSCRIBE then SUBSCRIBE, both unanswered till the release).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1), events.watch("job-2"):
                    raise AssertionError("entered before Redis confirmed the subscription")
            await first.__aexit__(None, None, None)
            await until_subscribers(direct, "job-1", 0)
            second = events.watch("job-1")
            entering = asyncio.create_task(second.__aenter__())
            await until_subscribers(direct, "job-1", 1)
            proxy.release()
            async with asyncio.timeout(SETTLE_TIMEOUT):
                await entering
            await settled(events)
            counts += [subscribers(direct, "job-1"), subscribers(direct, "job-2")]
            async with events.watch("job-1"):
                counts.append(subscribers(direct, "job-1"))
            await settled(events)
            counts.append(subscribers(direct, "job-1"))
            await second.__aexit__(None, None, None)
            await settled(events)
            counts.append(subscribers(direct, "job-1"))
        return counts

    assert asyncio.run(scenario()) == [1, 0, 1, 1, 0]


def test_an_update_brings_the_changes_and_the_result_apart(private_redis: str) -> None:
    record = new_record()
    fields: dict[str, str] = {**record.to_redis(), "status": "completed", "stage": "completed", "progress": "100"}
    result = b'{"job_id": "' + record.job_id.encode() + b'", "predictions": []}'

    async def scenario() -> tuple[JobUpdate | None, JobUpdate | None]:
        async with job_events(private_redis) as (events, client), events.watch(record.job_id) as updates:
            channel = keys.events(record.job_id)
            await client.publish(channel, "not json")
            await client.publish(channel, orjson.dumps({"job_id": record.job_id}))  # no status, no stage
            await client.publish(channel, orjson.dumps({**fields, "status": "processing", "stage": "inference"}))
            await client.publish(channel, orjson.dumps({**fields, RESULT_FIELD: result.decode()}))
            return await updates.get(), await updates.get()

    processing, completed = asyncio.run(scenario())

    assert processing is not None
    assert completed is not None
    assert (processing.apply(record).stage, processing.result) == (Stage.INFERENCE, None)
    assert completed.apply(record).status is JobStatus.COMPLETED
    assert completed.apply(record).job_id == record.job_id
    assert completed.result == result
