"""What the sync and async clients share: building requests, reading answers, and following a job.

Each public method of `Client` and `AsyncClient` turns into a `Call` built here; the two clients only
differ in how they send it (httpx.Client or httpx.AsyncClient) and how they wait (threads or asyncio).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import IO, Any, Generic, TypeAlias, TypeVar
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

import httpx
import pydantic

from visionq.client.errors import ConnectionFailed, JobTimeout, NotFinished, ProblemError, problem_class
from visionq.client.settings import ClientSettings
from visionq.wire.jobs import FailureBody, ResultBody, StatusBody
from visionq.wire.schemas import BatchAccepted, BatchItem, BatchStatus, JobAccepted, ModelCard, ModelInfo

#: Seconds one HTTP request may take (connect, send, and each read), unless the client is given another.
DEFAULT_TIMEOUT = 30.0
#: Seconds `wait()` and `classify()` wait for a job to finish, unless given another.
DEFAULT_WAIT = 300.0
#: Most seconds spent opening the WebSocket before following the job by polling instead.
WS_OPEN_TIMEOUT = 5.0
#: Polling delays: the first, the factor each next one grows by, and the largest.
POLL_FIRST_DELAY = 0.05
POLL_BACKOFF = 1.5
POLL_MAX_DELAY = 1.0
#: Most seconds the server is asked to hold one `GET /result` until the job ends (`Prefer: wait`; its cap is 60).
HOLD_MAX = 30
#: Characters of a non-problem error body kept in the ProblemError's detail.
BODY_EXCERPT = 200

ImageInput: TypeAlias = str | os.PathLike[str] | bytes | IO[bytes]
"""An image to submit: a path (`str` or `pathlib.Path`), its bytes, or a binary file object."""
JobRef: TypeAlias = str | JobAccepted
"""A job: its id, or the JobAccepted that `submit()` returned."""
Outcome: TypeAlias = ResultBody | FailureBody
"""How a job ended: its predictions (ResultBody) or why it failed or was cancelled (FailureBody)."""
OnStatus: TypeAlias = Callable[[StatusBody], None]
"""Called with each new StatusBody while a job is followed."""

T = TypeVar("T")

_WS_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


def resolve_url(url: str | None) -> str:
    """The API's base URL: `url`, else VISIONQ_URL (environment or `.env`), else http://127.0.0.1:8000."""
    return url if url is not None else ClientSettings().url


def resolve_credentials(api_key: str | None, token: str | None) -> tuple[str | None, str | None]:
    """The credentials to send: those given, else VISIONQ_API_KEY and VISIONQ_TOKEN (environment or `.env`)."""
    if api_key is not None or token is not None:
        return api_key, token
    settings = ClientSettings()
    return (
        settings.api_key.get_secret_value() if settings.api_key is not None else None,
        settings.token.get_secret_value() if settings.token is not None else None,
    )


def auth_headers(api_key: str | None, token: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if api_key is not None:
        headers["X-API-Key"] = api_key
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def ws_base(url: str) -> str:
    """The WebSocket base for an API base URL: http → ws, https → wss, path prefix kept."""
    parts = urlsplit(url)
    scheme = _WS_SCHEMES.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"cannot follow jobs over a WebSocket at {url!r}: use an http(s):// or ws(s):// URL")
    return urlunsplit((scheme, parts.netloc, parts.path, "", ""))


def ws_job_url(base: str, job_id: str, credential: str | None) -> str:
    """`{base}/ws/{job_id}`, with `?token=` when there is a credential (browsers cannot send headers;
    the SDK sends both the headers and the query parameter)."""
    parts = urlsplit(base)
    path = f"{parts.path.rstrip('/')}/ws/{quote(job_id, safe='')}"
    query = urlencode({"token": credential}) if credential is not None else ""
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def job_id(job: JobRef) -> str:
    return job.job_id if isinstance(job, JobAccepted) else job


@contextmanager
def image_parts(images: list[ImageInput]) -> Iterator[list[tuple[str, bytes | IO[bytes]]]]:
    """`image_part` of each image, all open for the request's duration."""
    with ExitStack() as stack:
        yield [stack.enter_context(image_part(image)) for image in images]


@contextmanager
def image_part(image: ImageInput) -> Iterator[tuple[str, bytes | IO[bytes]]]:
    """The `(filename, content)` of the multipart `file` field; a path is opened for the request's duration.
    The server decides the type from the bytes, so the name is only informative."""
    if isinstance(image, str | os.PathLike):
        with open(image, "rb") as file:
            yield os.path.basename(os.fspath(image)), file
    elif isinstance(image, bytes | bytearray):
        yield "image", bytes(image)
    elif hasattr(image, "read"):
        name = getattr(image, "name", None)
        yield (os.path.basename(name) if isinstance(name, str) else "image"), image
    else:
        raise TypeError(f"image must be a path, bytes or a binary file object, not {type(image).__name__}")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request of the API and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    data: Mapping[str, str] | None = None
    files: Mapping[str, tuple[str, bytes | IO[bytes]]] | list[tuple[str, tuple[str, bytes | IO[bytes]]]] | None = None
    headers: Mapping[str, str] | None = None
    hold: float = 0.0
    """Seconds the server may hold the request before it answers (`Prefer: wait`), on top of the read timeout."""

    def timeout(self, base: httpx.Timeout) -> httpx.Timeout:
        """The client's time-outs for this request: its read time-out lengthened by `hold`."""
        if not self.hold or base.read is None:
            return base
        return httpx.Timeout(connect=base.connect, read=base.read + self.hold, write=base.write, pool=base.pool)


def submit_call(
    part: tuple[str, bytes | IO[bytes]],
    *,
    model: str,
    priority: str,
    top_k: int,
    callback_url: str | None,
    idempotency_key: str | None = None,
) -> Call[JobAccepted]:
    data = {"model_version": model, "priority": str(priority), "top_k": str(top_k)}
    if callback_url is not None:
        data["callback_url"] = callback_url
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
    return Call("POST", "/classify", parse_accepted, data=data, files={"file": part}, headers=headers)


def classify_call(
    part: tuple[str, bytes | IO[bytes]],
    *,
    model: str,
    priority: str,
    top_k: int,
    callback_url: str | None,
    timeout: float | None,
) -> Call[JobAccepted | Outcome]:
    """`POST /classify` that asks for the job's outcome in its own answer (`Prefer: wait`, for as long as `timeout`
    and HOLD_MAX allow): the outcome of a job that ended meanwhile, else the accepted job, to follow."""
    upload = submit_call(part, model=model, priority=priority, top_k=top_k, callback_url=callback_url)
    hold = hold_for(timeout)
    headers = {"Prefer": f"wait={hold}"} if hold else None
    return Call("POST", "/classify", parse_accepted_or_outcome, data=upload.data, files=upload.files, headers=headers,
                hold=hold)  # fmt: skip


def hold_for(seconds: float | None) -> int:
    """Whole seconds to ask the server to hold a request (`Prefer: wait`) for a client that may wait `seconds`
    (None: as long as it takes): never past them, nor past HOLD_MAX."""
    return HOLD_MAX if seconds is None else max(0, min(HOLD_MAX, int(seconds)))


def time_left(timeout: float | None, started: float) -> float | None:
    """What is left of `timeout` seconds counted from `started` (`time.monotonic()`), never negative."""
    return None if timeout is None else max(0.0, timeout - (time.monotonic() - started))


#: File names sent as one archive by `submit_batch` (the server unpacks them).
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")
#: Image files a directory given to `submit_batch` contributes (the CLI's list).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def batch_inputs(images: ImageInput | list[ImageInput]) -> list[ImageInput]:
    """What `submit_batch` sends, one `file` part each: an archive as it is, a directory's image files (sorted, its
    subdirectories too), or the images given."""
    if isinstance(images, str | os.PathLike) and os.path.isdir(images):
        root = os.fspath(images)
        paths = sorted(
            os.path.join(folder, name)
            for folder, _, names in os.walk(root)
            for name in names
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")
        )
        return list[ImageInput](paths)
    if isinstance(images, list):
        return images
    return [images]


def batch_call(
    parts: list[tuple[str, bytes | IO[bytes]]],
    *,
    model: str,
    priority: str,
    top_k: int,
    callback_url: str | None,
) -> Call[BatchAccepted]:
    data = {"model_version": model, "priority": str(priority), "top_k": str(top_k)}
    if callback_url is not None:
        data["callback_url"] = callback_url
    return Call("POST", "/batches", parse_batch_accepted, data=data, files=[("file", part) for part in parts])


def batch_status_call(batch_id: str) -> Call[BatchStatus]:
    return Call("GET", f"/batches/{quote(batch_id, safe='')}", parse_batch_status)


def batch_cancel_call(batch_id: str) -> Call[BatchStatus]:
    return Call("DELETE", f"/batches/{quote(batch_id, safe='')}", parse_batch_status)


def batch_results_call(batch_id: str, cursor: int, limit: int) -> Call[tuple[list[BatchItem], int | None]]:
    """One page of a batch's results: its items, and the cursor of the next page (None after the last)."""
    path = f"/batches/{quote(batch_id, safe='')}/results?{urlencode({'cursor': cursor, 'limit': limit})}"
    return Call("GET", path, parse_batch_page)


def status_call(job: JobRef) -> Call[StatusBody]:
    return Call("GET", f"/status/{_segment(job)}", parse_status)


def result_call(job: JobRef, wait: int = 0) -> Call[Outcome]:
    """`GET /result`; with `wait`, the server may hold it that many seconds until the job ends (`Prefer: wait`)."""
    if wait <= 0:
        return Call("GET", f"/result/{_segment(job)}", parse_result)
    return Call("GET", f"/result/{_segment(job)}", parse_result, headers={"Prefer": f"wait={wait}"}, hold=wait)


def cancel_call(job: JobRef) -> Call[StatusBody]:
    return Call("DELETE", f"/jobs/{_segment(job)}", parse_status)


def models_call() -> Call[list[ModelInfo]]:
    return Call("GET", "/models", parse_models)


def model_call(ref: str) -> Call[ModelCard]:
    return Call("GET", f"/models/{quote(ref, safe='@')}", parse_model)


def _segment(job: JobRef) -> str:
    return quote(job_id(job), safe="")


_ACCEPTED = pydantic.TypeAdapter(JobAccepted)
_STATUS = pydantic.TypeAdapter(StatusBody)
# ResultBody requires `predictions` and FailureBody requires `error`, so exactly one of them fits a body.
_OUTCOME: pydantic.TypeAdapter[Outcome] = pydantic.TypeAdapter(Outcome)
_MODELS = pydantic.TypeAdapter(list[ModelInfo])
_BATCH_ACCEPTED = pydantic.TypeAdapter(BatchAccepted)
_BATCH_STATUS = pydantic.TypeAdapter(BatchStatus)
_CARD = pydantic.TypeAdapter(ModelCard)


def parse_accepted(response: httpx.Response) -> JobAccepted:
    raise_for_problem(response)
    return _validate(response, _ACCEPTED)


def parse_accepted_or_outcome(response: httpx.Response) -> JobAccepted | Outcome:
    """202 → the accepted job; 200 → its outcome (`Prefer: wait`): ResultBody, or FailureBody (failed, cancelled)."""
    raise_for_problem(response)
    if response.status_code == httpx.codes.OK:
        return _validate(response, _OUTCOME)
    return _validate(response, _ACCEPTED)


def parse_status(response: httpx.Response) -> StatusBody:
    raise_for_problem(response)
    return _validate(response, _STATUS)


def parse_result(response: httpx.Response) -> Outcome:
    """200 → ResultBody (completed) or FailureBody (failed, cancelled); 202 → raises NotFinished."""
    raise_for_problem(response)
    if response.status_code == httpx.codes.ACCEPTED:
        raise NotFinished(_validate(response, _STATUS))
    return _validate(response, _OUTCOME)


def parse_batch_accepted(response: httpx.Response) -> BatchAccepted:
    raise_for_problem(response)
    return _validate(response, _BATCH_ACCEPTED)


def parse_batch_status(response: httpx.Response) -> BatchStatus:
    raise_for_problem(response)
    return _validate(response, _BATCH_STATUS)


def parse_batch_page(response: httpx.Response) -> tuple[list[BatchItem], int | None]:
    raise_for_problem(response)
    items = [BatchItem.model_validate_json(line) for line in response.text.splitlines() if line.strip()]
    following = response.links.get("next", {}).get("url")
    cursor = parse_qs(urlsplit(following).query).get("cursor") if following else None
    return items, int(cursor[0]) if cursor else None


def parse_models(response: httpx.Response) -> list[ModelInfo]:
    raise_for_problem(response)
    return _validate(response, _MODELS)


def parse_model(response: httpx.Response) -> ModelCard:
    raise_for_problem(response)
    return _validate(response, _CARD)


def _validate(response: httpx.Response, adapter: pydantic.TypeAdapter[T]) -> T:
    try:
        return adapter.validate_json(response.content)
    except pydantic.ValidationError as exc:
        raise ProblemError(
            "internal_error",
            response.status_code,
            f"the API answered HTTP {response.status_code} with a body this client cannot read "
            f"({exc.error_count()} problems, the first: {exc.errors()[0]['msg']}); "
            "is the server a different visionq version than this client?",
        ) from exc


def raise_for_problem(response: httpx.Response) -> None:
    if response.is_error:
        raise problem_from_response(response)


def problem_from_response(response: httpx.Response) -> ProblemError:
    """The ProblemError subclass for an error answer's `code`; a body that is not a problem becomes a plain
    ProblemError with the code `internal_error` and the answer's HTTP status."""
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    body = _json_object(response)
    if body is None or not isinstance(body.get("code"), str):
        excerpt = response.text[:BODY_EXCERPT].strip() or "(empty body)"
        detail = f"the server answered HTTP {status} without a problem body: {excerpt}"
        return ProblemError("internal_error", status, detail, response.reason_phrase, retry_after=retry_after)
    code = str(body["code"])
    errors = body.get("errors")
    return problem_class(code)(
        code,
        status,
        str(body.get("detail", "")),
        str(body.get("title", "")),
        retry_after=retry_after,
        errors=errors if isinstance(errors, list) else None,
    )


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds from now: delay-seconds or an HTTP date (RFC 9110 §10.2.3); None if absent or bad."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def connection_failed(url: str, exc: httpx.TransportError) -> ConnectionFailed:
    if isinstance(exc, httpx.TimeoutException):
        return ConnectionFailed(url, f"no answer within the client's timeout ({type(exc).__name__})")
    return ConnectionFailed(url, str(exc) or type(exc).__name__)


def parse_ws_message(data: str | bytes) -> StatusBody | Outcome:
    """One WebSocket message: a status body (it has a `stage`), then the result or failure body.
    Raises ValueError for anything else."""
    body = json.loads(data)
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    if "stage" in body:
        return StatusBody.model_validate(body)
    if "predictions" in body:
        return ResultBody.model_validate(body)
    return FailureBody.model_validate(body)


class Watch:
    """The state of one `wait()`: its deadline, the polling back-off, and the last status reported.

    Each distinct StatusBody reaches `on_status` once, whether it came over the WebSocket or by polling.
    """

    def __init__(self, job: JobRef, timeout: float | None, on_status: OnStatus | None) -> None:
        self.job_id = job_id(job)
        self.timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._on_status = on_status
        self._delay = POLL_FIRST_DELAY
        self.last: StatusBody | None = None

    def remaining(self) -> float | None:
        """Seconds left, never negative; None when there is no deadline."""
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def open_timeout(self) -> float:
        remaining = self.remaining()
        return WS_OPEN_TIMEOUT if remaining is None else min(WS_OPEN_TIMEOUT, remaining)

    def observe(self, status: StatusBody) -> bool:
        """Report `status` if it is new; True when the job has finished."""
        if status != self.last:
            self.last = status
            if self._on_status is not None:
                self._on_status(status)
        return status.status.terminal

    def take(self, message: StatusBody | Outcome) -> Outcome | None:
        """A WebSocket message: None after a status update, the outcome once it arrives."""
        if isinstance(message, StatusBody):
            self.observe(message)
            return None
        return message

    def hold_seconds(self) -> int:
        """Seconds to ask the server to hold the next `GET /result` (whole seconds, never past the deadline)."""
        return hold_for(self.remaining())

    def pause_after_hold(self, asked: int, took: float) -> float:
        """Seconds to pause after a `GET /result` asked to be held `asked` s came back unfinished after `took` s:
        none when the server held it that long, else the polling back-off, for a server that does not hold
        requests (one older than `Prefer: wait`, or a proxy that drops the header) must not be asked in a tight
        loop. Raises JobTimeout once the deadline has passed."""
        if self.remaining() == 0.0:
            raise self.timed_out()
        return 0.0 if 0 < asked <= took else self.next_delay()

    def next_delay(self) -> float:
        """Seconds to sleep before the next poll; raises JobTimeout once the deadline has passed."""
        remaining = self.remaining()
        if remaining == 0.0:
            raise self.timed_out()
        delay = self._delay if remaining is None else min(self._delay, remaining)
        self._delay = min(self._delay * POLL_BACKOFF, POLL_MAX_DELAY)
        return delay

    def timed_out(self) -> JobTimeout:
        return JobTimeout(self.job_id, self.timeout if self.timeout is not None else 0.0, self.last)


class BatchWatch:
    """The state of one batch `wait()`: its deadline, the polling back-off, and the last status reported."""

    def __init__(self, batch_id: str, timeout: float | None, on_status: Callable[[BatchStatus], None] | None) -> None:
        self.batch_id = batch_id
        self.timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._on_status = on_status
        self._delay = POLL_FIRST_DELAY
        self._last: BatchStatus | None = None

    def observe(self, status: BatchStatus) -> bool:
        """Report `status` if it is new; True once the batch has ended."""
        if status != self._last:
            self._last = status
            if self._on_status is not None:
                self._on_status(status)
        return status.ended

    def next_delay(self) -> float:
        """Seconds to sleep before the next poll; raises TimeoutError once the deadline has passed."""
        if self._deadline is not None and time.monotonic() + self._delay > self._deadline:
            raise TimeoutError(f"batch {self.batch_id} did not end within {self.timeout} s")
        delay = self._delay
        self._delay = min(self._delay * POLL_BACKOFF, POLL_MAX_DELAY)
        return delay
