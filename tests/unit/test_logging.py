"""JSON log lines and the request/job context they carry."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from visionq.logging import CHATTY_LOGGERS, QUIET_LINES, ContextFilter, JsonFormatter, configure_logging, log_context
from visionq.settings import Settings


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


@pytest.fixture
def configured() -> Iterator[io.StringIO]:
    """A buffer for `_configure`'s lines; the process's logging set-up is restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    filters = {name: logging.getLogger(name).filters[:] for name in QUIET_LINES}
    yield io.StringIO()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, kept in levels.items():
        logging.getLogger(name).setLevel(kept)
    for name, filtered in filters.items():
        logging.getLogger(name).filters[:] = filtered


def _configure(level: str, out: io.StringIO) -> None:
    configure_logging(Settings(log_level=level, log_format="text"))
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)


def _library_lines() -> None:
    """What Celery, uvicorn and Alembic log for one task, one WebSocket and a schema check, as they log it."""
    logging.getLogger("celery.worker.strategy").info("Task %s[%s] received", "visionq.classify_image", "j1")
    logging.getLogger("celery.app.trace").info(
        "Task %s[%s] succeeded in %ss: %s", "visionq.classify_image", "j1", 0.1, None
    )
    logging.getLogger("celery.app.trace").error("Task %s[%s] raised unexpected: %r", "t", "j2", ValueError())
    uvicorn = logging.getLogger("uvicorn.error")
    uvicorn.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", "/ws/j1")
    uvicorn.info("connection open")
    uvicorn.info("Application startup complete.")
    logging.getLogger("alembic.runtime.plugins").info("setup plugin %s", "alembic.autogenerate.schemas")
    migration = logging.getLogger("alembic.runtime.migration")
    migration.info("Context impl %s.", "SQLiteImpl")
    migration.info("Will assume %s DDL.", "non-transactional")
    migration.info("Running upgrade %s -> %s, %s", "", "0001", "The jobs table.")


def test_at_info_the_libraries_lines_per_task_socket_and_schema_check_are_left_out_but_not_their_errors(
    configured: io.StringIO,
) -> None:
    _configure("INFO", configured)
    _configure("INFO", configured)  # again, as a process of the tests may: nothing doubles
    _library_lines()

    assert [line.split(": ", 1)[1] for line in configured.getvalue().splitlines()] == [
        "Task t[j2] raised unexpected: ValueError()",
        "Application startup complete.",
        "Running upgrade  -> 0001, The jobs table.",
    ]


def test_at_debug_every_library_line_is_kept(configured: io.StringIO) -> None:
    _configure("INFO", configured)
    _configure("DEBUG", configured)
    _library_lines()

    assert len(configured.getvalue().splitlines()) == 10
