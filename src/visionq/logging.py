"""Logging set-up: text for people or one JSON object per line, and the request/job context on every line.

`log_context(...)` binds fields (request id, principal, job id) for the code that runs inside it, in this
thread or task; every record logged there carries them, so a job's lines in the worker share the request id
of the upload that made the job. Nothing here ever logs a request body: no image bytes, no credentials.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson

from visionq.settings import LogFormat, Settings

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("visionq_log_context", default={})  # noqa: B039

#: LogRecord's own attributes: everything else on a record came from `extra=` and is logged as a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` to every record logged inside the block (None values are left out)."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the bound context onto each record (without overwriting what `extra=` gave)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line |= {name: value for name, value in vars(record).items() if name not in _STANDARD}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


#: Libraries' INFO lines for every task, which the worker's own line for the job already says ("job completed",
#: with its fields): Celery's "Task … received" and "Task … succeeded". Shown at DEBUG; their warnings always.
PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")
#: Libraries' INFO lines that say nothing an operator acts on: Alembic (1.17+) logs "setup plugin …" for each of
#: its seven autogenerate plugins in every process that loads it, ahead of `visionq serve`'s banner. Its migration
#: lines ("Running upgrade …") are another logger's and stay. httpx logs each request it makes ("HTTP Request: …"):
#: a callback's delivery has its own line, with its outcome. Shown at DEBUG; their warnings always.
CHATTY_LOGGERS = (*PER_TASK_LOGGERS, "alembic.runtime.plugins", "httpx")
#: Libraries' INFO lines, by logger and message format, that say nothing an operator acts on, dropped unless at
#: DEBUG: uvicorn's (and websockets') as each WebSocket opens and closes, which the API's access line for the socket
#: replaces (api/middleware.py); Alembic's two each time a process checks the archive's schema (three processes
#: under `visionq serve`), while its "Running upgrade …" lines, which say what changed, stay; Celery's "… ready.",
#: which the worker's own line replaces, with what the banner it leaves out said (worker/signals.py).
QUIET_LINES = {
    "celery.apps.worker": frozenset({"%s ready."}),
    "uvicorn.error": frozenset({'%s - "WebSocket %s" [accepted]', "connection open", "connection closed"}),
    "alembic.runtime.migration": frozenset({"Context impl %s.", "Will assume %s DDL."}),
}


class DropQuietLines(logging.Filter):
    def __init__(self, formats: frozenset[str]) -> None:
        super().__init__()
        self.formats = formats

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.formats


def configure_logging(settings: Settings) -> None:
    """Set up the root logger once per process, as `log_level` and `log_format` say. Above DEBUG, the libraries'
    lines per task and per WebSocket are left out: at the default INFO, a job's lines are then the access lines of
    its requests and sockets and the worker's one for the job (each line costs its process ~15-50 µs)."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    if settings.log_format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    verbose = root.isEnabledFor(logging.DEBUG)
    for name in CHATTY_LOGGERS:
        # Celery reads the level once, as a worker builds its task tracer and strategy: set before it starts.
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else max(root.level, logging.WARNING))
    for name, formats in QUIET_LINES.items():
        logger = logging.getLogger(name)
        for kept in [f for f in logger.filters if isinstance(f, DropQuietLines)]:
            logger.removeFilter(kept)
        if not verbose:
            logger.addFilter(DropQuietLines(formats))
