"""POST a finished job's body to its callback URL: sign it, check the target, follow redirects only to
allowed targets, and describe each attempt for the job's delivery log."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from visionq.callbacks.signing import SIGNATURE_HEADER, sign
from visionq.callbacks.targets import CallbackRefused, check_resolved_target
from visionq.jobs.batches import batch_id_of
from visionq.jobs.records import isoformat, utcnow

#: Redirects followed per attempt; each target is checked like the first.
MAX_REDIRECTS = 3
#: The longest wait between two attempts, whatever the back-off says.
MAX_BACKOFF = 300.0
#: Characters of an error or answer kept in the delivery log.
EXCERPT = 200
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt, as `GET /jobs/{id}/deliveries` shows it."""

    attempt: int
    delivery_id: str
    url: str
    at: str
    outcome: str
    """`delivered` (2xx), `failed` (retried while attempts remain), or `refused` (the target is not allowed)."""
    status_code: int | None
    error: str | None
    duration: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _subject(job_id: str) -> dict[str, str]:
    """What the callback is of: a job (`X-Visionq-Job-Id`), or a batch (`X-Visionq-Batch-Id`, and `batch:<id>` in
    `X-Visionq-Job-Id` for receivers that route on that header alone), never a Redis key."""
    batch_id = batch_id_of(job_id)
    if batch_id is None:
        return {"X-Visionq-Job-Id": job_id}
    return {"X-Visionq-Job-Id": f"batch:{batch_id}", "X-Visionq-Batch-Id": batch_id}


def delivery_id(job_id: str) -> str:
    """The same for every attempt of one job's callback, so that a receiver can drop duplicates."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"visionq:callback:{job_id}"))


def backoff(first: float, attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: `first`, then doubling, at most MAX_BACKOFF."""
    return float(min(MAX_BACKOFF, first * 2 ** (attempt - 1)))


def deliver(
    client: httpx.Client,
    url: str,
    body: bytes,
    *,
    job_id: str,
    attempt: int,
    secret: str,
    allow_private: bool,
) -> Attempt:
    """Make one attempt and say how it went; never raises for the receiver's or the network's faults. `job_id`: the
    job's id, or a batch's key (its final status is called back)."""
    headers = {
        "Content-Type": "application/json",
        **_subject(job_id),
        "X-Visionq-Delivery": delivery_id(job_id),
        SIGNATURE_HEADER: sign(body, secret),
        "User-Agent": "visionq-callbacks",
    }
    started = time.perf_counter()
    status_code: int | None = None
    try:
        target = url
        for _ in range(MAX_REDIRECTS + 1):
            check_resolved_target(target, allow_private=allow_private)
            response = client.post(target, content=body, headers=headers)
            status_code = response.status_code
            if status_code not in _REDIRECTS or "location" not in response.headers:
                break
            target = str(response.url.join(response.headers["location"]))
        else:
            return _attempt(
                attempt, job_id, url, "failed", status_code, f"more than {MAX_REDIRECTS} redirects", started
            )
    except CallbackRefused as refused:
        return _attempt(attempt, job_id, url, "refused", status_code, str(refused), started)
    except (httpx.HTTPError, OSError) as exc:
        return _attempt(attempt, job_id, url, "failed", None, f"{type(exc).__name__}: {exc}"[:EXCERPT], started)
    if 200 <= status_code < 300:
        return _attempt(attempt, job_id, url, "delivered", status_code, None, started)
    excerpt = response.text[:EXCERPT].strip() or None
    return _attempt(attempt, job_id, url, "failed", status_code, f"HTTP {status_code}: {excerpt}", started)


def _attempt(
    attempt: int, job_id: str, url: str, outcome: str, status_code: int | None, error: str | None, started: float
) -> Attempt:
    return Attempt(
        attempt=attempt,
        delivery_id=delivery_id(job_id),
        url=url,
        at=isoformat(utcnow()),
        outcome=outcome,
        status_code=status_code,
        error=error,
        duration=round(time.perf_counter() - started, 6),
    )
