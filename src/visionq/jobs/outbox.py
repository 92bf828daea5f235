"""ArchiveOutbox: the archiver's side of the `visionq:archive:outbox` sorted set (archive/archiver.py).

The job scripts add a job to the outbox, scored by when it changed, in the same atomic step as every change
the archive must see. The archiver reads the waiting jobs' current state, writes their rows, then takes off
only those whose state is still the one it wrote (the ARCHIVED script): a job that changed meanwhile stays
for the next drain, so the archive never keeps a state older than Redis's.
"""

from __future__ import annotations

from typing import Any, cast

import orjson
from redis import Redis

from visionq.jobs import keys, scripts

#: A job's state hash, as text; empty once the job expired.
Fields = dict[str, str]


class ArchiveOutbox:
    def __init__(self, redis: Redis, shards: keys.Shards | None = None) -> None:
        self.redis = redis
        self.shards = shards or keys.Shards()
        """One outbox per shard of job state, each beside the jobs that change it (keys.Shards)."""
        self._archived = redis.register_script(scripts.ARCHIVED)

    def waiting(self, newest: float | str, batch: int) -> list[str]:
        """Up to `batch` jobs on the outbox whose last change is no later than `newest` ("+inf" for all),
        oldest change first."""
        outbox = [
            (score, _text(job_id))
            for shard in self.shards.names
            for job_id, score in cast(
                "list[tuple[bytes | str, float]]",
                self.redis.zrangebyscore(
                    keys.archive_outbox(shard), "-inf", newest, start=0, num=batch, withscores=True
                ),
            )
        ]
        return [job_id for _, job_id in sorted(outbox)[:batch]]

    def read(self, job_ids: list[str]) -> list[tuple[Fields, bytes | None]]:
        """Each job's state hash and stored result (None unless completed and kept), in one round trip."""
        if not job_ids:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(keys.status(job_id))
                pipe.get(keys.result(job_id))
            replies = iter(pipe.execute())
        return [({_text(k): _text(v) for k, v in next(replies).items()}, next(replies)) for _ in job_ids]

    def read_batches(self, members: list[str]) -> list[tuple[Fields, list[dict[str, Any]]]]:
        """Each ended batch's hash and items (members `batch:{id}` of the outbox), in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for member in members:
                pipe.hgetall(member)
                pipe.lrange(f"{member}:items", 0, -1)
            replies = iter(pipe.execute())
        return [
            ({_text(k): _text(v) for k, v in next(replies).items()}, [orjson.loads(item) for item in next(replies)])
            for _ in members
        ]

    def archived(self, written: list[tuple[str, str]]) -> int:
        """Take off the outbox each (job id, status written) whose job still has that status, or is gone
        (status "" for a job that expired first); returns how many were taken off. One script, so that no
        change can land between the check and the removal. A batch (`batch:{id}`) is there only once it has
        ended, never to change again: its member has no job state, and is taken off at once."""
        by_shard: dict[str, list[tuple[str, str]]] = {}
        for job_id, status in written:  # one step per shard: its outbox and its jobs share a slot
            by_shard.setdefault(self.shards.of(job_id), []).append((job_id, status))
        removed = 0
        for shard, pairs in by_shard.items():
            # A batch's member names its hash, which has no `status` field: taken off, as the script says.
            status_keys = [
                job_id if job_id.startswith(keys.BATCH_PREFIX) else keys.status(job_id) for job_id, _ in pairs
            ]
            removed += int(
                self._archived(
                    keys=[keys.archive_outbox(shard), *status_keys], args=[v for pair in pairs for v in pair]
                )
            )
        return removed


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
