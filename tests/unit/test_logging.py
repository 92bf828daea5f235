"""JSON log lines and the request/job context they carry."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from visionq.logging import ContextFilter, JsonFormatter, log_context


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("visionq.test-logging")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_each_record_is_one_json_object_with_its_extra_fields(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged
    logger.info("GET %s %d", "/jobs", 200, extra={"route": "/jobs", "status": 200, "duration": 0.0012})

    (line,) = lines(out)
    assert line["message"] == "GET /jobs 200"
    assert line["level"] == "info"
    assert line["logger"] == "visionq.test-logging"
    assert str(line["ts"]).endswith("Z")
    assert (line["route"], line["status"], line["duration"]) == ("/jobs", 200, 0.0012)


def test_the_bound_context_reaches_every_line_inside_the_block_only(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = logged
    with log_context(request_id="req-1", principal="key:abc"):
        with log_context(job_id="job-1", owner=None):
            logger.info("inside both")
        logger.info("inside one", extra={"request_id": "given"})
    logger.info("outside")

    inner, middle, outer = lines(out)
    assert (inner["request_id"], inner["principal"], inner["job_id"]) == ("req-1", "key:abc", "job-1")
    assert "owner" not in inner, "None values are left out"
    assert middle["request_id"] == "given", "extra= wins over the context"
    assert "job_id" not in middle
    assert "request_id" not in outer


def test_exceptions_are_kept_as_one_field(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = logged
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    (line,) = lines(out)
    assert "ValueError: boom" in str(line["exception"])
