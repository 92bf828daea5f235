"""Archive rows to and from the job's own shapes: JobRecord and result body in, result or failure body out."""

from __future__ import annotations

from typing import Any

from visionq.archive.tables import ArchivedBatch, ArchivedJob
from visionq.jobs import batches
from visionq.jobs.records import JobRecord, isoformat, parse_time
from visionq.wire.jobs import FailureBody, ImageInfo, JobError, Prediction, Receipt, ResultBody, ResultMetadata
from visionq.wire.states import JobStatus


def row_from_job(record: JobRecord, result: ResultBody | None) -> dict[str, Any]:
    """The archive row of a job as Redis holds it now; `result` only for a completed job."""
    row: dict[str, Any] = {
        "job_id": record.job_id,
        "owner": record.owner,
        "status": record.status.value,
        "model_version": record.model_version,
        "priority": record.priority.value,
        "top_k": record.top_k,
        "attempts": record.attempts,
        "worker_id": record.worker_id,
        "request_id": record.request_id,
        "callback_url": record.callback_url,
        "image_sha256": record.image_sha256 or "",
        "image_format": record.image_format,
        "image_width": record.image_width,
        "image_height": record.image_height,
        "predictions": None,
        "confidence_score": None,
        "processing_time": None,
        "queue_time": None,
        "total_time": None,
        "served_by": None,
        "degraded_reason": None,
        "batch_size": None,
        "batch_wait": None,
        "receipt": None,
        "cache": None,
        "error_code": record.error_code,
        "error_message": record.error_message,
        "created_at": parse_time(record.created_at),
        "started_at": parse_time(record.started_at) if record.started_at else None,
        "updated_at": parse_time(record.updated_at),
        "completed_at": parse_time(record.updated_at) if record.status.terminal else None,
    }
    if result is not None:
        row |= {
            "predictions": [prediction.model_dump() for prediction in result.predictions],
            "confidence_score": result.confidence_score,
            "processing_time": result.processing_time,
            "queue_time": result.metadata.queue_time,
            "total_time": result.metadata.total_time,
            "served_by": result.metadata.served_by,
            "degraded_reason": result.metadata.degraded_reason,
            "batch_size": result.metadata.batch_size,
            "batch_wait": result.metadata.batch_wait,
            "receipt": result.metadata.receipt.model_dump() if result.metadata.receipt is not None else None,
            "cache": result.metadata.cache,
            "model_version": result.model_version,
            "completed_at": parse_time(result.completed_at),
        }
    return row


def outcome_from_row(row: ArchivedJob) -> ResultBody | FailureBody | None:
    """`GET /result` of an archived job: its result or failure body; None while the row is not terminal."""
    status = JobStatus(row.status)
    if status == JobStatus.COMPLETED and row.predictions is not None and row.completed_at is not None:
        return ResultBody(
            job_id=row.job_id,
            predictions=[Prediction.model_validate(prediction) for prediction in row.predictions],
            confidence_score=row.confidence_score or 0.0,
            processing_time=row.processing_time or 0.0,
            model_version=row.model_version,
            created_at=isoformat(row.created_at),
            completed_at=isoformat(row.completed_at),
            metadata=ResultMetadata(
                image=ImageInfo(width=row.image_width, height=row.image_height, format=row.image_format),
                queue_time=row.queue_time or 0.0,
                total_time=row.total_time or 0.0,
                served_by=row.served_by,
                degraded_reason=row.degraded_reason,
                batch_size=row.batch_size,
                batch_wait=row.batch_wait,
                receipt=Receipt.model_validate(row.receipt) if row.receipt is not None else None,
                cache=row.cache,
            ),
        )
    if status in (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED):
        return FailureBody(job_id=row.job_id, status=status, error=error_from_row(row))
    return None


def error_from_row(row: ArchivedJob) -> JobError | None:
    return JobError(code=row.error_code, message=row.error_message or "") if row.error_code else None


def row_from_batch(fields: dict[str, str], items: list[dict[str, Any]]) -> dict[str, Any]:
    """The archive row of an ended batch, from its Redis hash and items."""
    body = batches.status_body(fields)
    return {
        "batch_id": fields["batch_id"],
        "owner": fields.get("owner", ""),
        "status": body["status"],
        "priority": fields.get("priority", "low"),
        "total": body["total"],
        "counts": body["counts"],
        "items": items,
        "callback_url": fields.get("callback_url"),
        "created_at": parse_time(fields["created_at"]),
        "ended_at": parse_time(fields["ended_at"]) if fields.get("ended_at") else None,
    }


def batch_body(row: ArchivedBatch) -> dict[str, Any]:
    """The batch status body of an archived batch."""
    return {
        "batch_id": row.batch_id,
        "status": row.status,
        "total": row.total,
        "counts": row.counts,
        "progress": 100,
        "estimated_completion": isoformat(row.ended_at) if row.ended_at else None,
        "created_at": isoformat(row.created_at),
    }


def archived_items(row: ArchivedBatch, jobs: dict[str, ArchivedJob], start: int, end: int) -> list[dict[str, Any]]:
    """Items `start` to `end - 1` of an archived batch, each with its archived job's status, and predictions or
    error (as `GET /batches/{id}/results` gives them)."""
    items = []
    for item in row.items[start:end]:
        entry = {"job_id": None, **item}
        job = jobs.get(item.get("job_id") or "")
        if "error" in entry:
            entry["status"] = "failed"
        elif job is None:
            entry["status"] = "unknown"
        else:
            entry["status"] = job.status
            if job.predictions is not None:
                entry["predictions"] = job.predictions
            elif job.error_code:
                entry["error"] = {"code": job.error_code, "message": job.error_message or ""}
        items.append(entry)
    return items
