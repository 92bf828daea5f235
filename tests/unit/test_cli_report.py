"""What `visionq classify` prints for each image: JSON lines, the problem line, the results table."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from visionq.cli.report import ImageJob, accepted_table, json_line, problem_json, results_table
from visionq.client.common import problem_from_response
from visionq.client.errors import ConnectionFailed, JobTimeout
from visionq.wire.jobs import FailureBody, ImageInfo, JobError, Prediction, ResultBody, ResultMetadata
from visionq.wire.schemas import JobAccepted, Links
from visionq.wire.states import JobStatus, Priority

JOB_ID = "0b5c2d1e-4f6a-4b8c-9d0e-1f2a3b4c5d6e"
NOW = "2026-11-27T03:00:00.000Z"
ACCEPTED = JobAccepted(
    job_id=JOB_ID,
    status=JobStatus.PENDING,
    created_at=NOW,
    estimated_completion=None,
    model_version="efficientnet-lite0@1",
    priority=Priority.NORMAL,
    links=Links(status=f"/status/{JOB_ID}", result=f"/result/{JOB_ID}", websocket=f"/ws/{JOB_ID}"),
)
RESULT = ResultBody(
    job_id=JOB_ID,
    predictions=[Prediction(class_id=285, class_name="Egyptian cat", confidence=0.8125)],
    confidence_score=0.8125,
    processing_time=0.03,
    model_version="efficientnet-lite0@1",
    created_at=NOW,
    completed_at=NOW,
    metadata=ResultMetadata(image=ImageInfo(width=451, height=300, format="JPEG"), queue_time=0.01, total_time=0.042),
)
FAILED = FailureBody(job_id=JOB_ID, status=JobStatus.FAILED, error=JobError(code="invalid_image", message="truncated"))


def refusal() -> ImageJob:
    response = httpx.Response(
        415,
        json={"type": "urn:visionq:problem:unsupported_media_type", "title": "Unsupported media type",
              "status": 415, "detail": "not an image", "code": "unsupported_media_type"},
    )  # fmt: skip
    return ImageJob(Path("notes.txt"), refusal=problem_from_response(response))


def render(table: Table) -> str:
    out = io.StringIO()
    Console(width=120, file=out).print(table)
    return out.getvalue()


def test_a_completed_image_is_its_file_then_the_result_body() -> None:
    line = ImageJob(Path("cat.jpg"), job=ACCEPTED, outcome=RESULT).to_json()
    assert line == {"file": "cat.jpg", **RESULT.model_dump(mode="json")}
    assert json.loads(json_line(line)) == line


def test_a_refused_image_carries_the_problem_code_status_and_detail() -> None:
    job = refusal()
    assert job.to_json() == {
        "file": "notes.txt",
        "status": "refused",
        "error": {"code": "unsupported_media_type", "status": 415, "detail": "not an image"},
    }
    assert job.problem_line() == "notes.txt: error[unsupported_media_type]: not an image"
    assert not job.classified


def test_a_failed_job_is_not_classified_and_its_error_is_reported() -> None:
    job = ImageJob(Path("bad.jpg"), job=ACCEPTED, outcome=FAILED)
    assert job.to_json()["error"] == {"code": "invalid_image", "message": "truncated"}
    assert job.problem_line() == f"bad.jpg: error[invalid_image]: truncated (job {JOB_ID})"
    assert not job.classified


def test_no_wait_gives_the_accepted_job_and_a_timeout_says_the_job_goes_on() -> None:
    assert ImageJob(Path("cat.jpg"), job=ACCEPTED).to_json() == {"file": "cat.jpg", **ACCEPTED.model_dump(mode="json")}
    timed_out = ImageJob(Path("cat.jpg"), job=ACCEPTED, timeout=JobTimeout(JOB_ID, 5.0, None)).to_json()
    assert timed_out["status"] == "timed_out"
    assert timed_out["job_id"] == JOB_ID
    assert "did not finish within 5s" in timed_out["error"]["detail"]


def test_a_connection_failure_names_the_url_and_the_option_to_fix_it() -> None:
    problem = problem_json(ConnectionFailed("http://127.0.0.1:9", "All connection attempts failed"))
    assert problem["code"] == "connection_failed"
    assert "http://127.0.0.1:9" in problem["detail"]
    assert "--url" in problem["detail"]


def test_the_results_table_has_a_row_per_image_with_top1_confidence_model_and_time() -> None:
    jobs = [ImageJob(Path("cat.jpg"), job=ACCEPTED, outcome=RESULT), refusal()]
    text = render(results_table(jobs))
    header, _, cat, refused = text.splitlines()[:4]
    assert [cell.strip() for cell in header.split("┃")] == ["file", "top-1", "confidence", "model", "time"]
    assert [cell.strip() for cell in cat.split("│")] == [
        "cat.jpg",
        "Egyptian cat",
        "0.812",
        "efficientnet-lite0@1",
        "42 ms",
    ]
    assert "refused: unsupported_media_type" in refused


def test_the_accepted_table_lists_job_ids() -> None:
    text = render(accepted_table([ImageJob(Path("cat.jpg"), job=ACCEPTED), refusal()]))
    assert JOB_ID in text
    assert "refused: unsupported_media_type" in text
