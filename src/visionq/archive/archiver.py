"""Archiver: copies jobs from Redis to the archive, from the outbox the job scripts fill.

Every change the archive must see (a job accepted, a job ended) adds the job to the `visionq:archive:outbox`
sorted set in the same atomic step as the change itself. Each worker process drains it on its housekeeping
tick: read the jobs' current state, upsert their rows, then take off the outbox only those whose state did
not change meanwhile (the ARCHIVED script). A database outage therefore delays the archive and loses nothing
while Redis keeps the jobs (`result_ttl`); `visionq_archive_backlog` shows the outbox's size.

A completed job never changes again, so a worker hands the archiver the results its own jobs produced and the
jobs' state as their completion left it (`completed_here`): the archiver reads neither back from Redis, about
2.5 KB of Redis traffic less per job (issue 12).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from pydantic import ValidationError
from redis import Redis

from visionq.archive.repository import Archive
from visionq.archive.rows import row_from_batch, row_from_job
from visionq.jobs import keys
from visionq.jobs.keys import Shards
from visionq.jobs.outbox import ArchiveOutbox
from visionq.jobs.records import JobRecord
from visionq.wire.jobs import ResultBody
from visionq.wire.states import JobStatus

log = logging.getLogger(__name__)

#: Jobs archived per database transaction.
ARCHIVE_BATCH = 200
#: Results of this process's own jobs kept for the archive; beyond that (an archive far behind) the oldest are
#: read back from Redis as before.
KNOWN_RESULTS = 4096


class Archiver:
    def __init__(
        self,
        redis: Redis,
        archive: Archive,
        *,
        batch: int = ARCHIVE_BATCH,
        settle: float = 0.0,
        shards: Shards | None = None,
    ) -> None:
        self.outbox = ArchiveOutbox(redis, shards)
        self.archive = archive
        self.batch = batch
        self.settle = settle
        self._known: OrderedDict[str, tuple[JobRecord, ResultBody]] = OrderedDict()
        self._known_guard = threading.Lock()  # jobs finish on their threads, the drain runs on housekeeping's

    def completed_here(self, record: JobRecord, result: ResultBody) -> None:
        """A job this process just completed, as its completion left it (`JobRecord.completed`), and its result: the
        drain need not read either back."""
        with self._known_guard:
            self._known[result.job_id] = (record, result)
            if len(self._known) > KNOWN_RESULTS:
                self._known.popitem(last=False)

    def drain(self, *, settled: bool = True) -> int:
        """Archive up to `batch` waiting jobs, oldest change first; returns how many rows were written. With
        `settled`, only jobs whose last change is `settle` seconds old (a later change moves a job's mark)."""
        newest = time.time() - self.settle if settled else "+inf"
        waiting = self.outbox.waiting(newest, self.batch)
        if not waiting:
            return 0
        batches = [member for member in waiting if member.startswith(keys.BATCH_PREFIX)]
        if batches:
            self._archive_batches(batches)
            waiting = [member for member in waiting if not member.startswith(keys.BATCH_PREFIX)]
        with self._known_guard:
            known = {job_id: self._known.pop(job_id) for job_id in waiting if job_id in self._known}
        rows, written = [], []
        for job_id, (record, result) in known.items():
            rows.append(row_from_job(record, result))
            written.append((job_id, record.status.value))
        unknown = [job_id for job_id in waiting if job_id not in known]
        for job_id, (fields, stored) in zip(unknown, self.outbox.read(unknown), strict=True):
            if not fields:  # expired before it could be archived: nothing left to write
                log.warning("job expired from Redis before it was archived", extra={"job_id": job_id})
                written.append((job_id, ""))
                continue
            try:
                record = JobRecord.from_redis(fields)
                body = _result_body(stored) if record.status == JobStatus.COMPLETED else None
            except ValidationError:
                log.exception("job %s cannot be archived: its Redis state is unreadable", job_id)
                written.append((job_id, fields.get("status", "")))  # taken off the outbox all the same
                continue
            rows.append(row_from_job(record, body))
            written.append((job_id, record.status.value))
        self.archive.save(rows)
        self.outbox.archived(written)
        return len(rows) + len(batches)

    def _archive_batches(self, members: list[str]) -> None:
        """Archive ended batches (outbox members `batch:{id}`): their counts and items."""
        rows = []
        for member, (fields, items) in zip(members, self.outbox.read_batches(members), strict=True):
            if fields:
                rows.append(row_from_batch(fields, items))
            else:
                log.warning("batch expired from Redis before it was archived", extra={"batch": member})
        self.archive.save_batches(rows)
        self.outbox.archived([(member, "") for member in members])


def _result_body(result: bytes | None) -> ResultBody | None:
    """A completed job's result as read from Redis (None when gone)."""
    return None if result is None else ResultBody.model_validate_json(result)
