"""Job updates pushed over Redis pub/sub, fanned out inside one API process.

Workers publish every change of a job's status hash on `job:{id}:events`, in the same Lua step that makes the
change; the step that completes a job adds the result JSON (`RESULT_FIELD`), so that watchers can answer without
reading it back. Each API process subscribes, on ONE connection, to the channels of the jobs that someone in it
is watching: SUBSCRIBE when a job's first local watcher comes, UNSUBSCRIBE when its last one leaves. A thousand
open sockets cost one Redis connection, and a process hears of its own watchers' jobs only, not of every job.

The connection is driven by hand rather than through redis-py's `PubSub`, which reconnects and resubscribes on
its own: that would hide the moment when updates may have been lost. Here one task writes the commands that
watchers queue, in the order they queued them, and one reads the confirmations and messages (PINGing a silent
connection to find out whether it is still there). On any error both stop, and the next connection subscribes to
every watched channel again; its confirmations tell the watchers that were already following a job to read it
again (a `None` in their queue).

On a Redis Cluster the steps PUBLISH as on one server, and the cluster passes every message to every node: the
connection goes to any node, a random one each time (another after a node fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeAlias

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from visionq import errors
from visionq.cancelling import cancel
from visionq.jobs import keys
from visionq.jobs.records import JobRecord
from visionq.jobs.scripts import CHANGING

log = logging.getLogger(__name__)

#: Seconds to wait before reconnecting after the pub/sub connection broke.
RESUBSCRIBE_DELAY = 1.0
#: Seconds `watch()` waits for Redis to confirm a new subscription before giving up (Redis is unwell).
SUBSCRIBE_TIMEOUT = 10.0
#: Seconds of silence after which the connection is PINGed; as long again without an answer and it is dropped.
IDLE_PING_INTERVAL = 10.0
#: The connection's name in `CLIENT LIST`, for operators to tell it from the pooled ones.
CLIENT_NAME = "visionq-job-events"
#: The field of a published update that holds the result JSON (added by `scripts.COMPLETE` only).
RESULT_FIELD = "result"


@dataclass(frozen=True, slots=True)
class JobUpdate:
    """One change of a job, as its watchers receive it: the fields that changing can change ('' for one the job
    no longer has), to apply to the job as the watcher last knew it."""

    changes: dict[str, str]
    result: bytes | None = None
    """The result JSON, exactly as stored, on the update that completes the job; None on every other."""

    def apply(self, record: JobRecord) -> JobRecord:
        """`record` as this update leaves it. Raises pydantic's ValidationError for a change it cannot hold."""
        return JobRecord.from_redis({**record.to_redis(), **self.changes})


Updates: TypeAlias = asyncio.Queue[JobUpdate | None]
"""What `JobEvents.watch()` yields: each update of the job, or None when some may have been missed (the
connection to Redis broke and the subscription has been made again): read the job again then."""

Command: TypeAlias = tuple[str, ...]
#: What a writing task finds in its queue when its connection is over.
_STOP: Command = ()


class _Channel:
    """The local watchers of one job's channel, and whether Redis has confirmed the subscription."""

    def __init__(self) -> None:
        self.watchers: set[Updates] = set()
        self.subscribed = asyncio.Event()

    def tell(self, update: JobUpdate | None) -> None:
        for queue in self.watchers:
            queue.put_nowait(update)


class JobEvents:
    """Fan-out of job updates to local watchers, over one subscription per watched job.

    >>> async with events.watch(job_id) as updates:     # doctest: +SKIP
    ...     record = await store.get(job_id)             # what changes from here on arrives in `updates`
    ...     update = await updates.get()                 # a JobUpdate, or None: read the job again
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._channels: dict[str, _Channel] = {}
        # SUBSCRIBEs written (or queued) on the current connection and not yet confirmed, per channel. A channel
        # may be subscribed, unsubscribed and subscribed again before the first confirmation comes back; only
        # the last confirmation covers the watchers of the moment.
        self._unconfirmed: dict[str, int] = {}
        self._outbox: asyncio.Queue[Command] = asyncio.Queue()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="visionq-job-events")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel(self._task)

    async def wait_subscribed(self, seconds: float) -> bool:
        """Whether the listening connection is up (holding every watched job's subscription), waiting up to
        `seconds` for it."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._connected.wait()
        return self._connected.is_set()

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[Updates]:
        """Every update of `job_id` published while the context is open.

        It is entered once Redis has confirmed the subscription, so a read of the job right after entering
        misses nothing: any later change arrives in the queue. Raises BrokerUnavailable when Redis does not
        confirm it within SUBSCRIBE_TIMEOUT seconds.
        """
        channel = keys.events(job_id)
        entry = self._channels.get(channel)
        if entry is None:
            entry = self._channels[channel] = _Channel()
            self._command("SUBSCRIBE", channel)
        updates: Updates = asyncio.Queue()
        entry.watchers.add(updates)
        try:
            await self._confirmation(entry, job_id)
            yield updates
        finally:
            # Synchronous, so that it also holds when the watcher is being cancelled.
            entry.watchers.discard(updates)
            if not entry.watchers and self._channels.get(channel) is entry:
                del self._channels[channel]
                self._command("UNSUBSCRIBE", channel)

    async def _confirmation(self, entry: _Channel, job_id: str) -> None:
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await entry.subscribed.wait()
        except TimeoutError:
            raise errors.BrokerUnavailable(
                f"Redis did not confirm the subscription to job {job_id!r}'s updates within "
                f"{SUBSCRIBE_TIMEOUT:.0f}s; try again shortly"
            ) from None

    def _command(self, *command: str) -> None:
        if command[0] == "SUBSCRIBE":
            self._unconfirmed[command[1]] = self._unconfirmed.get(command[1], 0) + 1
        self._outbox.put_nowait(command)

    async def _listen(self) -> None:
        while True:
            try:
                await self._session()
            except (RedisError, OSError) as exc:
                log.warning("job event subscriptions lost, reconnecting: %s", exc)
            except Exception:
                # Whatever went wrong, watchers must not be left without updates for good.
                log.exception("job event listener failed, reconnecting")
            await asyncio.sleep(RESUBSCRIBE_DELAY)

    async def _session(self) -> None:
        """One connection's life: subscribe to every watched channel, then read and write until it breaks."""
        connection = await self._connect()
        try:
            outbox = self._begin()
            reading = asyncio.create_task(self._read(connection), name="visionq-job-events-read")
            writing = asyncio.create_task(self._write(connection, outbox), name="visionq-job-events-write")
            self._connected.set()
            try:
                done, _ = await asyncio.wait({reading, writing}, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            finally:
                self._end(outbox)
                await cancel(reading, writing)
        finally:
            self._connected.clear()
            try:
                await connection.disconnect(nowait=True)
            finally:
                if not isinstance(self.redis, RedisCluster):
                    await self.redis.connection_pool.release(connection)

    async def _connect(self) -> AbstractConnection:
        """A connection of the client's pool; on a cluster, a connection of its own to a random node."""
        if not isinstance(self.redis, RedisCluster):
            pool = self.redis.connection_pool
            connection: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
            return connection
        await self.redis.initialize()
        node = random.choice(self.redis.get_nodes())
        connection = node.connection_class(**node.connection_kwargs)
        await connection.connect()
        return connection

    def _begin(self) -> asyncio.Queue[Command]:
        """A fresh command queue for a new connection, opening with a SUBSCRIBE of every watched channel.
        Synchronous, so that no watcher comes or goes between the snapshot and the switch; commands queued for
        the broken connection are dropped, this one covers them."""
        outbox: asyncio.Queue[Command] = asyncio.Queue()
        outbox.put_nowait(("CLIENT", "SETNAME", CLIENT_NAME))
        if self._channels:
            outbox.put_nowait(("SUBSCRIBE", *self._channels))
        self._unconfirmed = dict.fromkeys(self._channels, 1)
        self._outbox = outbox
        return outbox

    def _end(self, outbox: asyncio.Queue[Command]) -> None:
        """Stop the writing task even if it misses its cancellation: Python 3.11's `asyncio.wait_for` (which
        redis-py's write goes through) swallows one that comes as the write completes. Commands queued until the
        next connection go to a queue of their own, which that connection's SUBSCRIBE of everything covers."""
        self._outbox = asyncio.Queue()
        while not outbox.empty():
            outbox.get_nowait()
        outbox.put_nowait(_STOP)

    async def _write(self, connection: AbstractConnection, outbox: asyncio.Queue[Command]) -> None:
        while (command := await outbox.get()) != _STOP:
            # No health check: it would read the PONG that the reading task is waiting for.
            await connection.send_command(*command, check_health=False)

    async def _read(self, connection: AbstractConnection) -> None:
        pinged = False
        while True:
            reply = await connection.read_response(timeout=IDLE_PING_INTERVAL, push_request=True)
            if reply is None:  # silence
                if pinged:
                    raise RedisConnectionError(f"no answer to a PING within {IDLE_PING_INTERVAL:.0f}s")
                self._outbox.put_nowait(("PING",))
                pinged = True
                continue
            pinged = False
            self._handle(reply)

    def _handle(self, reply: Any) -> None:
        """A reply on the connection: a message, a subscription's confirmation, or an answer to ignore (OK, PONG,
        an unsubscription's confirmation)."""
        if not isinstance(reply, list) or len(reply) != 3:
            return
        kind, channel = _text(reply[0]), _text(reply[1])
        if kind == "message":
            self._deliver(channel, reply[2])
        elif kind == "subscribe":
            self._confirmed(channel)

    def _confirmed(self, channel: str) -> None:
        left = self._unconfirmed.get(channel, 0) - 1
        if left > 0:
            self._unconfirmed[channel] = left
            return
        self._unconfirmed.pop(channel, None)
        entry = self._channels.get(channel)
        if entry is None:
            return
        if entry.subscribed.is_set():  # subscribed again on a new connection: updates may have been missed
            entry.tell(None)
        else:
            entry.subscribed.set()

    def _deliver(self, channel: str, payload: str | bytes) -> None:
        entry = self._channels.get(channel)
        # Before the confirmation, a message belongs to an earlier subscription to the channel: it is older than
        # anything the new watchers are about to read.
        if entry is None or not entry.subscribed.is_set():
            return
        try:
            fields = orjson.loads(payload)
            if not isinstance(fields, dict):
                raise TypeError(f"expected a JSON object, got {type(fields).__name__}")
            result = fields.pop(RESULT_FIELD, None)
            changes = {str(name): str(value) for name, value in fields.items() if name in CHANGING}
            if not (changes.get("job_id") and changes.get("status") and changes.get("stage")):
                raise TypeError("an update names the job, its status and its stage")
        except (orjson.JSONDecodeError, TypeError) as exc:
            log.warning("ignoring an unreadable update on %s: %s", channel, exc)
            return
        entry.tell(JobUpdate(changes, result.encode() if isinstance(result, str) else None))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
