"""The load generator: jobs submitted over HTTP and followed to their result over the WebSocket, as a client does.

`Load.single()` sends one image per `POST /classify`; `Load.multi(parts)` sends `parts` images in one request
(API.md "Several images per request": `202 {"jobs": [...]}`). Each job is followed on `/ws/{id}` until the server
closes it; the last message is the result body. `Load.waited()` asks for the result in the answer itself
(`Prefer: wait`, one request per job): what the SDK does when no progress is asked for. `saturate` keeps a fixed
number of jobs in flight (closed loop) and samples the service when its measurement window opens and closes;
`offer` submits at a fixed rate whatever the service does (open loop).
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

#: Seconds one job may take from its submit to its result before it counts as failed.
JOB_TIMEOUT = 60.0
#: Images in the probe that asks whether the server takes several per request.
PROBE_PARTS = 2

T = TypeVar("T")


@dataclass(frozen=True)
class Finished:
    """One job as the client saw it: seconds from the submit to the result, and how it ended."""

    seconds: float
    outcome: str
    """`completed`, the job's other terminal status, the problem code of a refused submit, or the client error."""
    phases: dict[str, float] = field(default_factory=dict)
    """Where a completed job's seconds went: `submit` (the POST's round trip, as the client saw it), and from the
    result body `queue` (accepted → picked up), `processing` (picked up → stored) and `server` (accepted → stored)."""

    @property
    def completed(self) -> bool:
        return self.outcome == "completed"


Unit = Callable[[], Coroutine[Any, Any, list[Finished]]]


class Load:
    """An HTTP client and a WebSocket base for one service, submitting `image` for `model`.

    >>> async with Load("http://127.0.0.1:8000", photo, "efficientnet-lite0") as load:   # doctest: +SKIP
    ...     jobs = await load.single()
    """

    def __init__(self, url: str, image: bytes, model: str) -> None:
        self.ws = "ws" + url.removeprefix("http")
        self.image = image
        self.model = model
        self.http = httpx.AsyncClient(base_url=url, timeout=JOB_TIMEOUT, limits=httpx.Limits(max_connections=None))

    async def __aenter__(self) -> Load:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def single(self) -> list[Finished]:
        """One image in one request, followed to its result."""
        started = time.monotonic()
        try:
            body = (await self._post(1)).json()
        except (httpx.HTTPError, ValueError) as exc:  # no answer, or not JSON
            return [Finished(time.monotonic() - started, type(exc).__name__)]
        return [await self._follow(body, started, time.monotonic() - started)]

    async def multi(self, parts: int) -> list[Finished]:
        """`parts` images in one request, each job followed to its result (at once, on its own WebSocket)."""
        started = time.monotonic()
        try:
            body = (await self._post(parts)).json()
        except (httpx.HTTPError, ValueError) as exc:
            return [Finished(time.monotonic() - started, type(exc).__name__)] * parts
        submitted = time.monotonic() - started
        jobs = body.get("jobs") if isinstance(body, dict) else None
        if not isinstance(jobs, list):
            return [await self._follow(body, started, submitted)]
        return list(await asyncio.gather(*(self._follow(job, started, submitted) for job in jobs)))

    async def waited(self) -> list[Finished]:
        """One image in one request that answers with the job's result (`Prefer: wait`); a job that has not
        ended within the wait (a 202) is followed on its WebSocket."""
        started = time.monotonic()
        try:
            response = await self._post(1, prefer=f"wait={int(JOB_TIMEOUT)}")
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return [Finished(time.monotonic() - started, type(exc).__name__)]
        submitted = time.monotonic() - started
        if response.status_code == 202:
            return [await self._follow(body, started, submitted)]
        ended = str(body.get("status") or body.get("code") or "no status")
        phases = {name: seconds for name, seconds in _phases(body, submitted).items() if name != "submit"}
        return [Finished(submitted, ended, phases)]

    async def takes_several_images(self) -> str | None:
        """None when the server answers a request with several images with one job each; else what it did."""
        response = await self._post(PROBE_PARTS)
        body = response.json()
        if response.status_code == 202 and isinstance(body.get("jobs"), list):
            await asyncio.gather(*(self._follow(job, time.monotonic(), 0.0) for job in body["jobs"]))
            return None
        if "job_id" in body:
            await self._follow(body, time.monotonic(), 0.0)
            return f"answered {response.status_code} with a single job's body"
        return f"answered {response.status_code} {body.get('code', '')}: {body.get('detail', '')}"

    async def _post(self, parts: int, *, prefer: str | None = None) -> httpx.Response:
        files = [("file", ("photo.jpg", self.image, "image/jpeg"))] * parts
        # The same photo every time: each job must run the model, not reuse the first's result.
        headers = {"Cache-Control": "no-cache", **({"Prefer": prefer} if prefer else {})}
        return await self.http.post("/classify", files=files, data={"model_version": self.model}, headers=headers)

    async def _follow(self, accepted: dict[str, Any], started: float, submitted: float) -> Finished:
        """The job of an accepted body, followed on its WebSocket; a problem body is a refused job."""
        if "job_id" not in accepted:
            return Finished(time.monotonic() - started, str(accepted.get("code", "no job id")))
        last: str | bytes = b"{}"
        ended = started
        try:
            async with (
                asyncio.timeout(JOB_TIMEOUT),
                connect(f"{self.ws}/ws/{accepted['job_id']}", compression=None) as socket,
            ):
                async for message in socket:
                    last, ended = message, time.monotonic()
        except (TimeoutError, OSError, WebSocketException) as exc:
            return Finished(time.monotonic() - started, type(exc).__name__)
        result = json.loads(last)
        return Finished(ended - started, str(result.get("status", "no status")), _phases(result, submitted))


def _phases(result: dict[str, Any], submitted: float) -> dict[str, float]:
    metadata = result.get("metadata") or {}
    if "processing_time" not in result or "total_time" not in metadata:
        return {}
    server = {"queue": metadata["queue_time"], "processing": result["processing_time"]}
    return {"submit": submitted, **server, "server": metadata["total_time"]}


@dataclass
class Saturation(Generic[T]):
    """A closed-loop run: the jobs that ended inside the window, and the samples at its two ends."""

    opened: T | None = None
    closed: T | None = None
    jobs: list[Finished] = field(default_factory=list)

    @property
    def completed(self) -> int:
        return sum(job.completed for job in self.jobs)


async def saturate(
    unit: Unit, *, loops: int, warmup: int, jobs: int, seconds: float, sample: Callable[[], T]
) -> Saturation[T]:
    """Closed loop: `loops` clients, each sending its next request as soon as the last one's jobs ended.

    The window opens once `warmup` jobs have ended and closes once `jobs` more have, or `seconds` have passed;
    `sample()` is taken at both ends. Jobs still in flight at the close end outside it."""
    run: Saturation[T] = Saturation()
    ended = 0
    deadline = math.inf
    closing = asyncio.Event()

    def open_window() -> None:
        nonlocal deadline
        run.opened, deadline = sample(), time.monotonic() + seconds

    def count(job: Finished) -> None:
        nonlocal ended
        ended += 1
        if run.opened is not None and run.closed is None:
            run.jobs.append(job)
            if len(run.jobs) >= jobs or time.monotonic() >= deadline:
                run.closed = sample()
                closing.set()
        elif ended >= warmup and run.opened is None:
            open_window()

    async def loop() -> None:
        while not closing.is_set():
            for job in await unit():
                count(job)

    if warmup <= 0:
        open_window()
    await asyncio.gather(*(loop() for _ in range(loops)))
    return run


async def offer(unit: Unit, *, rate: float, requests: int) -> list[Finished]:
    """Open loop: one request every 1/`rate` s, `requests` in all, whatever the service does."""
    started = time.monotonic()
    sent: list[asyncio.Task[list[Finished]]] = []
    for n in range(requests):
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        sent.append(asyncio.create_task(unit()))
    return [job for jobs in await asyncio.gather(*sent) for job in jobs]


def latency(jobs: list[Finished]) -> dict[str, Any]:
    """p50/p95/p99 in ms of the completed jobs, with how many ended otherwise."""
    seconds = sorted(job.seconds for job in jobs if job.completed)
    failed = dict(Counter(job.outcome for job in jobs if not job.completed))
    if len(seconds) < 2:
        return {"jobs": len(jobs), "completed": len(seconds), "failed": failed}
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return {
        "jobs": len(jobs),
        "completed": len(seconds),
        "failed": failed,
        "p50_ms": 1000 * cuts[49],
        "p95_ms": 1000 * cuts[94],
        "p99_ms": 1000 * cuts[98],
        "median_phases_ms": _median_phases(jobs),
    }


def _median_phases(jobs: list[Finished]) -> dict[str, float]:
    timed = [job.phases for job in jobs if job.completed and job.phases]
    return {name: 1000 * statistics.median(phases[name] for phases in timed) for name in timed[0]} if timed else {}
