"""`Client`: the blocking Python SDK (httpx for HTTP, websockets' sync client to follow jobs)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_any
from contextlib import ExitStack
from types import TracebackType
from typing import TypeVar

import httpx
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import connect as ws_connect

from visionq.client import common
from visionq.client.common import DEFAULT_TIMEOUT, DEFAULT_WAIT, ImageInput, JobRef, OnStatus, Outcome
from visionq.client.errors import NotFinished, ProblemError
from visionq.wire.jobs import StatusBody
from visionq.wire.schemas import BatchAccepted, BatchItem, BatchStatus, JobAccepted, ModelCard, ModelInfo

__all__ = ["Batch", "Client"]

T = TypeVar("T")
ImageT = TypeVar("ImageT", bound=ImageInput)


class Client:
    """Submit images to a visionq API and follow their jobs, blocking.

    >>> import visionq                                              # doctest: +SKIP
    >>> with visionq.Client("http://127.0.0.1:8000") as client:
    ...     result = client.classify("cat.jpg", top_k=3)
    ...     print(result.predictions[0].class_name)
    Egyptian cat

    `url` defaults to VISIONQ_URL, else http://127.0.0.1:8000. `api_key` is sent as `X-API-Key`, `token`
    as `Authorization: Bearer`, and either as `?token=` on the WebSocket; without either, VISIONQ_API_KEY
    and VISIONQ_TOKEN are used when set. `timeout` bounds each HTTP
    request (seconds; a `GET /result` that the server is asked to hold gets that much longer to answer);
    `wait()` has its own. `ws_url` is the base of the WebSocket URLs, by default `url` with ws(s)://; the
    WebSocket follows jobs whose progress is asked for (`on_status`), and polling takes over whenever it
    cannot be used.
    A client may be shared between threads.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        ws_url: str | None = None,
    ) -> None:
        self.url = common.resolve_url(url)
        api_key, token = common.resolve_credentials(api_key, token)
        self.ws_url = common.ws_base(ws_url if ws_url is not None else self.url)
        self._credential = token if token is not None else api_key
        self._headers = common.auth_headers(api_key, token)
        self._http = httpx.Client(base_url=self.url, headers=self._headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections (the context manager does it on exit)."""
        self._http.close()

    def submit(
        self,
        image: ImageInput,
        *,
        model: str = "latest",
        priority: str = "normal",
        top_k: int = 5,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> JobAccepted:
        """Queue `image` (a path, bytes, or a binary file object) for classification; returns at once.
        With `idempotency_key`, sending the same request again (a retry after a lost answer, say) within
        24 h returns the original job instead of making a second one."""
        with common.image_part(image) as part:
            call = common.submit_call(
                part,
                model=model,
                priority=priority,
                top_k=top_k,
                callback_url=callback_url,
                idempotency_key=idempotency_key,
            )
            return self._send(call)

    def submit_batch(
        self,
        images: ImageInput | list[ImageInput],
        *,
        model: str = "latest",
        priority: str = "low",
        top_k: int = 5,
        callback_url: str | None = None,
    ) -> Batch:
        """Send many images as one batch, each its own job; returns at once. `images`: a zip or tar archive, a
        directory (its image files), or a list of images (paths, bytes, file objects). `callback_url` is called
        once, when the whole batch ends."""
        with common.image_parts(common.batch_inputs(images)) as parts:
            call = common.batch_call(parts, model=model, priority=priority, top_k=top_k, callback_url=callback_url)
            return Batch(self, self._send(call))

    def status(self, job: JobRef) -> StatusBody:
        """Where the job is: status, stage, progress."""
        return self._send(common.status_call(job))

    def result(self, job: JobRef) -> Outcome:
        """The predictions (ResultBody), or why the job failed or was cancelled (FailureBody).
        Raises NotFinished, carrying the current StatusBody, while the job is pending or processing."""
        return self._send(common.result_call(job))

    def cancel(self, job: JobRef) -> StatusBody:
        """Cancel a queued or running job; raises ConflictError if it has already finished."""
        return self._send(common.cancel_call(job))

    def models(self) -> list[ModelInfo]:
        """The server's model catalog."""
        return self._send(common.models_call())

    def model(self, ref: str) -> ModelCard:
        """One model's card (`latest`, a name, or `name@version`); raises NotFoundError for an unknown one."""
        return self._send(common.model_call(ref))

    def wait(self, job: JobRef, timeout: float | None = DEFAULT_WAIT, *, on_status: OnStatus | None = None) -> Outcome:
        """Block until the job finishes and return its outcome; raise JobTimeout (a TimeoutError) after
        `timeout` seconds (None: no limit). Without `on_status`, asks `GET /result` to wait for the end
        (`Prefer: wait`, up to 30 s a request). With it, follows the WebSocket, or polls /status if it cannot be
        opened or drops; `on_status` sees each new StatusBody, and progress never goes down."""
        watch = common.Watch(job, timeout, on_status)
        if on_status is None:
            return self._hold(watch)
        outcome = self._follow(watch)
        return outcome if outcome is not None else self._poll(watch)

    def classify(
        self,
        image: ImageInput,
        *,
        model: str = "latest",
        priority: str = "normal",
        top_k: int = 5,
        callback_url: str | None = None,
        timeout: float | None = DEFAULT_WAIT,
        on_status: OnStatus | None = None,
    ) -> Outcome:
        """`submit()` then `wait()`. Without `on_status`, the upload asks for the outcome in its own answer
        (`Prefer: wait`): a job that ends within the hold costs one request instead of two."""
        if on_status is not None:
            job = self.submit(image, model=model, priority=priority, top_k=top_k, callback_url=callback_url)
            return self.wait(job, timeout, on_status=on_status)
        started = time.monotonic()
        with common.image_part(image) as part:
            call = common.classify_call(
                part, model=model, priority=priority, top_k=top_k, callback_url=callback_url, timeout=timeout
            )
            answer = self._send(call)
        if not isinstance(answer, JobAccepted):
            return answer
        return self.wait(answer, common.time_left(timeout, started))

    def classify_many(
        self,
        images: Iterable[ImageT],
        *,
        concurrency: int = 4,
        model: str = "latest",
        priority: str = "normal",
        top_k: int = 5,
        callback_url: str | None = None,
        timeout: float | None = DEFAULT_WAIT,
        on_status: OnStatus | None = None,
    ) -> Generator[tuple[ImageT, Outcome | ProblemError]]:
        """Classify `images` with up to `concurrency` jobs at once, yielding `(image, outcome)` as each finishes.

        An image the API refuses yields its ProblemError and the batch goes on; ConnectionFailed and
        JobTimeout end it. Images are taken from the iterable as slots free up. `on_status` is called
        from the worker threads. Closing the iterator early waits for the jobs in flight.
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        source = iter(images)
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="visionq-classify") as pool:
            running: dict[Future[Outcome], ImageT] = {}
            while True:
                for image in itertools.islice(source, concurrency - len(running)):
                    future = pool.submit(
                        self.classify,
                        image,
                        model=model,
                        priority=priority,
                        top_k=top_k,
                        callback_url=callback_url,
                        timeout=timeout,
                        on_status=on_status,
                    )
                    running[future] = image
                if not running:
                    return
                done, _ = wait_any(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield running.pop(future), _outcome(future)

    def _send(self, call: common.Call[T]) -> T:
        try:
            response = self._http.request(
                call.method,
                call.path,
                data=call.data,
                files=call.files,
                headers=call.headers,
                timeout=call.timeout(self._http.timeout),
            )
        except httpx.TransportError as exc:
            raise common.connection_failed(self.url, exc) from exc
        return call.parse(response)

    def _hold(self, watch: common.Watch) -> Outcome:
        """Follow the job with `GET /result` held by the server until the job ends (`Prefer: wait`). A server that
        answers 202 at once (it does not hold requests) is polled with growing pauses instead."""
        while True:
            asked = watch.hold_seconds()
            sent = time.monotonic()
            try:
                return self._send(common.result_call(watch.job_id, asked))
            except NotFinished as running:
                watch.observe(running.status)
            pause = watch.pause_after_hold(asked, time.monotonic() - sent)
            if pause:
                time.sleep(pause)

    def _follow(self, watch: common.Watch) -> Outcome | None:
        """Follow the job over the WebSocket; None if it cannot be opened or drops before the outcome."""
        with ExitStack() as stack:
            try:
                ws = stack.enter_context(
                    ws_connect(
                        common.ws_job_url(self.ws_url, watch.job_id, self._credential),
                        additional_headers=self._headers,
                        open_timeout=watch.open_timeout(),
                    )
                )
            except (OSError, WebSocketException):
                return None
            while True:
                try:
                    message = common.parse_ws_message(ws.recv(timeout=watch.remaining()))
                except TimeoutError:
                    raise watch.timed_out() from None
                except (ConnectionClosed, ValueError):
                    return None
                outcome = watch.take(message)
                if outcome is not None:
                    return outcome

    def _poll(self, watch: common.Watch) -> Outcome:
        while True:
            if watch.observe(self.status(watch.job_id)):
                return self.result(watch.job_id)
            time.sleep(watch.next_delay())


class Batch:
    """A batch sent by `Client.submit_batch`: its status, its items' results, waiting for it, cancelling it.

    >>> batch = client.submit_batch("photos.zip")         # doctest: +SKIP
    >>> batch.wait().counts.completed                     # doctest: +SKIP
    >>> for item in batch.results(): print(item.name, item.predictions[0].class_name)  # doctest: +SKIP
    """

    def __init__(self, client: Client, accepted: BatchAccepted) -> None:
        self.client = client
        self.accepted = accepted
        self.batch_id = accepted.batch_id

    def status(self) -> BatchStatus:
        return self.client._send(common.batch_status_call(self.batch_id))

    def cancel(self) -> BatchStatus:
        """Cancel the items not yet started; those running finish."""
        return self.client._send(common.batch_cancel_call(self.batch_id))

    def wait(
        self, timeout: float | None = DEFAULT_WAIT, *, on_status: Callable[[BatchStatus], None] | None = None
    ) -> BatchStatus:
        """Block until every item has ended (polling its status with growing pauses, at most one a second); raise
        TimeoutError after `timeout` seconds. `on_status` sees each new status."""
        watch = common.BatchWatch(self.batch_id, timeout, on_status)
        while not watch.observe(status := self.status()):
            time.sleep(watch.next_delay())
        return status

    def results(self, page: int = 1000) -> Iterator[BatchItem]:
        """Every item, in order, with its status and predictions or error, read a page at a time."""
        cursor: int | None = 0
        while cursor is not None:
            items, cursor = self.client._send(common.batch_results_call(self.batch_id, cursor, page))
            yield from items


def _outcome(future: Future[Outcome]) -> Outcome | ProblemError:
    try:
        return future.result()
    except ProblemError as refused:
        return refused
