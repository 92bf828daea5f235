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


def create(redis_url: str, record: JobRecord, image: bytes = b"img") -> None:
    async def run() -> None:
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        await JobStore(client, result_ttl=RESULT_TTL, image_ttl=IMAGE_TTL).create(record, image)
        await client.aclose()

    asyncio.run(run())
