"""`AsyncClient`: the asyncio Python SDK (httpx for HTTP, websockets' asyncio client to follow jobs).

(Named `aio`, not `asyncio`, so that no import of this package can ever be mistaken for the standard library's.)
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TypeVar

import httpx
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from visionq.client import common
from visionq.client.common import DEFAULT_TIMEOUT, DEFAULT_WAIT, ImageInput, JobRef, OnStatus, Outcome
from visionq.client.errors import NotFinished, ProblemError
from visionq.wire.jobs import StatusBody
from visionq.wire.schemas import BatchAccepted, BatchItem, BatchStatus, JobAccepted, ModelCard, ModelInfo

__all__ = ["AsyncBatch", "AsyncClient"]

T = TypeVar("T")
ImageT = TypeVar("ImageT", bound=ImageInput)


class AsyncClient:
    """Submit images to a visionq API and follow their jobs, with asyncio. The same API as `Client`, awaited.

    >>> import visionq                                              # doctest: +SKIP
    >>> async def main() -> None:
    ...     async with visionq.AsyncClient("http://127.0.0.1:8000") as client:
    ...         job = await client.submit("cat.jpg")
    ...         result = await client.wait(job, on_status=lambda s: print(s.stage, s.progress))
    ...         async for image, outcome in client.classify_many(["a.jpg", "b.png"], concurrency=8):
    ...             print(image, outcome)
    >>> asyncio.run(main())

    `url` defaults to VISIONQ_URL, else http://127.0.0.1:8000. `api_key` is sent as `X-API-Key`, `token`
    as `Authorization: Bearer`, and either as `?token=` on the WebSocket; without either, VISIONQ_API_KEY
    and VISIONQ_TOKEN are used when set. `timeout` bounds each HTTP
    request (seconds; a `GET /result` that the server is asked to hold gets that much longer to answer);
    `wait()` has its own. `ws_url` is the base of the WebSocket URLs, by default `url` with ws(s)://; the
    WebSocket follows jobs whose progress is asked for (`on_status`), and polling takes over whenever it
    cannot be used.
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
        self._http = httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections (the context manager does it on exit)."""
        await self._http.aclose()

    async def submit(
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
            return await self._send(call)

    async def submit_batch(
        self,
        images: ImageInput | list[ImageInput],
        *,
        model: str = "latest",
        priority: str = "low",
        top_k: int = 5,
        callback_url: str | None = None,
    ) -> AsyncBatch:
        """`Client.submit_batch`, awaited: many images as one batch (an archive, a directory, or a list)."""
        with common.image_parts(common.batch_inputs(images)) as parts:
            call = common.batch_call(parts, model=model, priority=priority, top_k=top_k, callback_url=callback_url)
            return AsyncBatch(self, await self._send(call))

    async def status(self, job: JobRef) -> StatusBody:
        """Where the job is: status, stage, progress."""
        return await self._send(common.status_call(job))

    async def result(self, job: JobRef) -> Outcome:
        """The predictions (ResultBody), or why the job failed or was cancelled (FailureBody).
        Raises NotFinished, carrying the current StatusBody, while the job is pending or processing."""
        return await self._send(common.result_call(job))

    async def cancel(self, job: JobRef) -> StatusBody:
        """Cancel a queued or running job; raises ConflictError if it has already finished."""
        return await self._send(common.cancel_call(job))

    async def models(self) -> list[ModelInfo]:
        """The server's model catalog."""
        return await self._send(common.models_call())

    async def model(self, ref: str) -> ModelCard:
        """One model's card (`latest`, a name, or `name@version`); raises NotFoundError for an unknown one."""
        return await self._send(common.model_call(ref))

    async def wait(
        self,
        job: JobRef,
        # Not asyncio.timeout's job: on expiry the JobTimeout carries the last status, and the job goes on.
        timeout: float | None = DEFAULT_WAIT,  # noqa: ASYNC109
        *,
        on_status: OnStatus | None = None,
    ) -> Outcome:
        """Wait until the job finishes and return its outcome; raise JobTimeout (a TimeoutError) after
        `timeout` seconds (None: no limit). Without `on_status`, asks `GET /result` to wait for the end
        (`Prefer: wait`, up to 30 s a request). With it, follows the WebSocket, or polls /status if it cannot be
        opened or drops; `on_status` sees each new StatusBody, and progress never goes down."""
        watch = common.Watch(job, timeout, on_status)
        if on_status is None:
            return await self._hold(watch)
        outcome = await self._follow(watch)
        return outcome if outcome is not None else await self._poll(watch)

    async def classify(
        self,
        image: ImageInput,
        *,
        model: str = "latest",
        priority: str = "normal",
        top_k: int = 5,
        callback_url: str | None = None,
        timeout: float | None = DEFAULT_WAIT,  # noqa: ASYNC109 (passed on to wait())
        on_status: OnStatus | None = None,
    ) -> Outcome:
        """`submit()` then `wait()`. Without `on_status`, the upload asks for the outcome in its own answer
        (`Prefer: wait`): a job that ends within the hold costs one request instead of two."""
        if on_status is not None:
            job = await self.submit(image, model=model, priority=priority, top_k=top_k, callback_url=callback_url)
            return await self.wait(job, timeout, on_status=on_status)
        started = time.monotonic()
        with common.image_part(image) as part:
            call = common.classify_call(
                part, model=model, priority=priority, top_k=top_k, callback_url=callback_url, timeout=timeout
            )
            answer = await self._send(call)
        if not isinstance(answer, JobAccepted):
            return answer
        return await self.wait(answer, common.time_left(timeout, started))

    async def classify_many(
        self,
        images: Iterable[ImageT],
        *,
        concurrency: int = 4,
        model: str = "latest",
        priority: str = "normal",
        top_k: int = 5,
        callback_url: str | None = None,
        timeout: float | None = DEFAULT_WAIT,  # noqa: ASYNC109 (each job's wait())
        on_status: OnStatus | None = None,
    ) -> AsyncGenerator[tuple[ImageT, Outcome | ProblemError]]:
        """Classify `images` with up to `concurrency` jobs at once, yielding `(image, outcome)` as each finishes.

        An image the API refuses yields its ProblemError and the batch goes on; ConnectionFailed and
        JobTimeout end it. Images are taken from the iterable as slots free up. Leaving the loop early
        cancels the jobs' tasks once the generator is closed (wrap it in `contextlib.aclosing` to close it
        at once).
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        source = iter(images)
        running: dict[asyncio.Task[Outcome], ImageT] = {}
        try:
            while True:
                for image in itertools.islice(source, concurrency - len(running)):
                    task = asyncio.create_task(
                        self.classify(
                            image,
                            model=model,
                            priority=priority,
                            top_k=top_k,
                            callback_url=callback_url,
                            timeout=timeout,
                            on_status=on_status,
                        )
                    )
                    running[task] = image
                if not running:
                    return
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    yield running.pop(task), _outcome(task)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _send(self, call: common.Call[T]) -> T:
        try:
            response = await self._http.request(
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

    async def _hold(self, watch: common.Watch) -> Outcome:
        """Follow the job with `GET /result` held by the server until the job ends (`Prefer: wait`). A server that
        answers 202 at once (it does not hold requests) is polled with growing pauses instead."""
        while True:
            asked = watch.hold_seconds()
            sent = time.monotonic()
            try:
                return await self._send(common.result_call(watch.job_id, asked))
            except NotFinished as running:
                watch.observe(running.status)
            pause = watch.pause_after_hold(asked, time.monotonic() - sent)
            if pause:
                await asyncio.sleep(pause)

    async def _follow(self, watch: common.Watch) -> Outcome | None:
        """Follow the job over the WebSocket; None if it cannot be opened or drops before the outcome."""
        async with AsyncExitStack() as stack:
            try:
                ws = await stack.enter_async_context(
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
                    async with asyncio.timeout(watch.remaining()):
                        data = await ws.recv()
                    message = common.parse_ws_message(data)
                except TimeoutError:
                    raise watch.timed_out() from None
                except (ConnectionClosed, ValueError):
                    return None
                outcome = watch.take(message)
                if outcome is not None:
                    return outcome

    async def _poll(self, watch: common.Watch) -> Outcome:
        while True:
            if watch.observe(await self.status(watch.job_id)):
                return await self.result(watch.job_id)
            await asyncio.sleep(watch.next_delay())


class AsyncBatch:
    """A batch sent by `AsyncClient.submit_batch` (see `Batch`)."""

    def __init__(self, client: AsyncClient, accepted: BatchAccepted) -> None:
        self.client = client
        self.accepted = accepted
        self.batch_id = accepted.batch_id

    async def status(self) -> BatchStatus:
        return await self.client._send(common.batch_status_call(self.batch_id))

    async def cancel(self) -> BatchStatus:
        return await self.client._send(common.batch_cancel_call(self.batch_id))

    async def wait(
        self,
        timeout: float | None = DEFAULT_WAIT,  # noqa: ASYNC109 (the batch goes on: not asyncio.timeout's job)
        *,
        on_status: Callable[[BatchStatus], None] | None = None,
    ) -> BatchStatus:
        watch = common.BatchWatch(self.batch_id, timeout, on_status)
        while True:
            status = await self.status()
            if watch.observe(status):
                return status
            await asyncio.sleep(watch.next_delay())

    async def results(self, page: int = 1000) -> AsyncIterator[BatchItem]:
        cursor: int | None = 0
        while cursor is not None:
            items, cursor = await self.client._send(common.batch_results_call(self.batch_id, cursor, page))
            for item in items:
                yield item


def _outcome(task: asyncio.Task[Outcome]) -> Outcome | ProblemError:
    try:
        return task.result()
    except ProblemError as refused:
        return refused
