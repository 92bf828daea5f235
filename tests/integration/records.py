"""Jobs made straight in Redis, through the real JobStore, for tests of job state and the archive."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio

from visionq.jobs.records import JobRecord, isoformat, utcnow
from visionq.jobs.store import JobStore, Submitted
from visionq.wire.jobs import Prediction, ResultBody, ResultMetadata
from visionq.wire.states import JobStatus, Priority, Stage

RESULT_TTL, IMAGE_TTL = 60, 30


def new_record() -> JobRecord:
    now = isoformat(utcnow())
    return JobRecord(
        job_id=str(uuid.uuid4()),
        status=JobStatus.PENDING,
        stage=Stage.QUEUED,
        created_at=now,
        updated_at=now,
        model_version="efficientnet-lite0@1",
        priority=Priority.NORMAL,
        top_k=5,
        image_format="PNG",
        image_width=4,
        image_height=3,
    )


def result_for(record: JobRecord) -> ResultBody:
    return ResultBody(
        job_id=record.job_id,
        predictions=[Prediction(class_id=285, class_name="Egyptian cat", confidence=0.8)],
        confidence_score=0.8,
        processing_time=0.01,
        model_version=record.model_version,
        created_at=record.created_at,
        completed_at=isoformat(utcnow()),
        metadata=ResultMetadata(image=record.image, queue_time=0.0, total_time=0.01),
    )


#: The queue the jobs made here are queued on: no worker serves it (the tests play the worker).
QUEUE = "visionq-test-records"


def create(
    redis_url: str,
    record: JobRecord,
    image: bytes | None = b"img",
    *,
    queue: str = QUEUE,
    max_queued: int = 0,
    remember: tuple[str, bytes] | None = None,
    deadline: float | None = None,
) -> Submitted:
    """Make and queue the job as the API does (`JobStore.submit`); `image=None` as when an image store holds it."""

    async def run() -> Submitted:
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        try:
            store = JobStore(client, result_ttl=RESULT_TTL, image_ttl=IMAGE_TTL)
            return await store.submit(
                record, queue=queue, image=image, max_queued=max_queued, remember=remember, deadline=deadline
            )
        finally:
            await client.aclose()

    return asyncio.run(run())


def release_unmade(redis_url: str, job_id: str, reservation: str) -> None:
    """`JobStore.release_unmade`, as the API runs it once Redis is back after a submit it could not finish."""

    async def run() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await JobStore(client, result_ttl=RESULT_TTL, image_ttl=IMAGE_TTL).release_unmade(job_id, reservation)
        finally:
            await client.aclose()

    asyncio.run(run())
