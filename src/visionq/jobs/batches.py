"""Batches in Redis: many images sent at once, each its own job, followed as one (`POST /batches`).

batch:{id}         hash  batch_id, owner, priority, created_at, callback_url, total (items), state (creating → open
                         → completed | cancelled), the item counts per outcome (processing, completed, failed,
                         cancelled, expired: kept by the jobs' own Lua steps), ended (items that reached an
                         outcome), cancel_requested, ended_at; TTL = image_ttl + result_ttl
batch:{id}:items   list  one JSON object per item, in order: {index, name, job_id} or {index, name, error}

An item's job carries `batch_id`; the steps that start and end a job count it in its batch's hash, and the step
that ends the last one ends the batch (and queues its callback). Items refused at submission (not an image, too
large) are ended and failed from the start. Counting in the jobs' own steps keeps a batch's status O(1) to read
whatever its size.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from visionq.jobs import keys, scripts
from visionq.jobs.records import isoformat, utcnow

#: Items read from Redis at a time when results are streamed.
PAGE = 100
COUNTED = ("pending", "processing", "completed", "failed", "cancelled", "expired")


def batch_key(batch_id: str) -> str:
    """Tagged with the id, which hashes to the slot of its shard, as its jobs' ids do (keys.Shards)."""
    return f"{keys.BATCH_PREFIX}{{{batch_id}}}"


def batch_id_of(key: str) -> str | None:
    """The id in a batch's key (`batch_key`), as its callbacks name it; None for any other key or job id."""
    if not (key.startswith(keys.BATCH_PREFIX + "{") and key.endswith("}")):
        return None
    return key[len(keys.BATCH_PREFIX) + 1 : -1]


def items_key(batch_id: str) -> str:
    return f"{keys.BATCH_PREFIX}{{{batch_id}}}:items"


def status_body(fields: dict[str, str], *, pace: float | None = None) -> dict[str, Any]:
    """The batch status body (API.md) from its hash; `pace`: the queue's seconds between starts, for the ETA."""
    total = int(fields.get("total", 0))
    counts = {name: int(fields.get(name, 0)) for name in COUNTED[1:]}
    ended = int(fields.get("ended", 0))
    counts = {"pending": max(0, total - ended - counts["processing"]), **counts}
    state = fields.get("state", "creating")
    if state in ("completed", "cancelled"):
        status = state
    elif counts["processing"] or ended:
        status = "running"
    else:
        status = "pending"
    remaining = total - ended
    estimated = None
    if status in ("pending", "running") and pace is not None:
        estimated = isoformat(utcnow() + timedelta(seconds=remaining * pace))
    elif status in ("completed", "cancelled") and fields.get("ended_at"):
        estimated = fields["ended_at"]
    return {
        "batch_id": fields["batch_id"],
        "status": status,
        "total": total,
        "counts": counts,
        "progress": 100 if total == 0 else int(100 * ended / total),
        "estimated_completion": estimated,
        "created_at": fields.get("created_at"),
    }


class BatchStore:
    """Batches as the API makes and reads them."""

    def __init__(self, redis: Redis, *, ttl: int, queue: str, shards: keys.Shards | None = None) -> None:
        self.redis = redis
        self.ttl = ttl
        self.queue = queue
        self.shards = shards or keys.Shards()
        """A batch and its jobs live in one shard: the batch's id and theirs hash to its slot."""
        self._open = redis.register_script(scripts.OPEN_BATCH)

    async def create(self, batch_id: str, *, owner: str, priority: str, total: int, callback_url: str | None) -> str:
        """Write the batch, `creating`, before its jobs are made (an item may end before the last is made)."""
        now = isoformat(utcnow())
        fields: dict[FieldT, EncodableT] = {
            "batch_id": batch_id,
            "owner": owner,
            "priority": priority,
            "created_at": now,
            "total": total,
            "state": "creating",
            "ended": 0,
        }
        if callback_url:
            fields["callback_url"] = callback_url
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(batch_key(batch_id), mapping=fields)
            pipe.expire(batch_key(batch_id), self.ttl)
            await pipe.execute()
        return now

    async def open(self, batch_id: str, items: list[dict[str, Any]]) -> None:
        """Record the items (each its job id, or the problem that refused it) and open the batch: refused items
        are ended and failed now, and a batch whose jobs all ended already ends here."""
        refused = sum("error" in item for item in items)
        shard = self.shards.of(batch_id)
        await self._open(
            keys=[batch_key(batch_id), items_key(batch_id), keys.callbacks_due(shard), keys.archive_outbox(shard)],
            args=[refused, self.ttl, isoformat(utcnow()), time.time(), *(orjson.dumps(item) for item in items)],
        )

    async def read(self, batch_id: str) -> dict[str, str] | None:
        fields = await self.redis.hgetall(batch_key(batch_id))
        return {str(k): str(v) for k, v in fields.items()} if fields else None

    async def body(self, fields: dict[str, str]) -> dict[str, Any]:
        pace = await self.redis.hget(keys.pace(self.queue, self.shards.of(fields["batch_id"])), "interval")
        return status_body(fields, pace=float(pace) if pace else None)

    async def items(self, batch_id: str, start: int, count: int) -> list[dict[str, Any]]:
        """Items `start` to `start + count - 1`, each with its job's status, and predictions or error."""
        raw = await self.redis.lrange(items_key(batch_id), start, start + count - 1)
        items = [orjson.loads(entry) for entry in raw]
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in items:
                job_id = item.get("job_id")
                pipe.hmget(keys.status(job_id or ""), ["status", "error_code", "error_message"])
                pipe.get(keys.result(job_id or ""))
            replies = await pipe.execute()
        for item, (state, code, message), result in zip(items, replies[::2], replies[1::2], strict=True):
            item.setdefault("job_id", None)  # every line has the key (API.md); null for an image refused alone
            if "error" in item:
                item["status"] = "failed"
            elif state is None:
                item["status"] = "unknown"  # expired from Redis: GET /result/{job_id} reads the archive
            else:
                item["status"] = str(state)
                if result:
                    item["predictions"] = orjson.loads(result)["predictions"]
                elif code:
                    item["error"] = {"code": str(code), "message": str(message or "")}
        return items

    async def job_ids(self, batch_id: str) -> list[str]:
        return [
            job_id
            for entry in await self.redis.lrange(items_key(batch_id), 0, -1)
            if (job_id := orjson.loads(entry).get("job_id"))
        ]

    async def request_cancel(self, batch_id: str) -> None:
        await self.redis.hset(batch_key(batch_id), "cancel_requested", 1)
