"""Jobs made straight in Redis, through the real JobStore, for tests of job state and the archive."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio

from visionq.jobs.records import JobRecord, Prediction, ResultBody, ResultMetadata, isoformat, utcnow
from visionq.jobs.states import JobStatus, Priority, Stage
from visionq.jobs.store import JobStore

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


#: The queue the jobs made here are confirmed on (no message is sent: the tests play the worker).
QUEUE = "visionq-test-records"


def create(
    redis_url: str, record: JobRecord, image: bytes = b"img", *, queue: str = QUEUE, confirm: bool = True
) -> None:
    """Store the job as the API does, and (unless told not to) confirm it as queued on `queue`."""

    async def run() -> None:
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        store = JobStore(client, result_ttl=RESULT_TTL, image_ttl=IMAGE_TTL)
        await store.create(record, image, queue=queue)
        if confirm:
            assert await store.confirm(record.job_id, queue)
        await client.aclose()

    asyncio.run(run())


def confirm(redis_url: str, job_id: str, *, queue: str = QUEUE, remember: tuple[str, bytes] | None = None) -> bool:
    """`JobStore.confirm`, as the API calls it once the job's message is in the broker."""

    async def run() -> bool:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            return await JobStore(client, result_ttl=RESULT_TTL, image_ttl=IMAGE_TTL).confirm(
                job_id, queue, remember=remember
            )
        finally:
            await client.aclose()

    return asyncio.run(run())


def settle_refused(redis_url: str, job_id: str, reservation: str | None) -> None:
    """`JobStore.settle_refused`, as the API runs it once Redis is back after refusing a submit."""

    async def run() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await JobStore(client, result_ttl=RESULT_TTL, image_ttl=IMAGE_TTL).settle_refused(job_id, reservation)
        finally:
            await client.aclose()

    asyncio.run(run())
