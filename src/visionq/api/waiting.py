"""`Prefer: wait=N` (RFC 7240): holding a request until its job ends, for GET /result and POST /classify.

>>> seconds = parse_prefer_wait(request.headers.get("Prefer"))         # doctest: +SKIP
>>> if seconds:
...     record, result = await wait_for_end(events, store, job_id, seconds)
>>> response.headers.update(preference_applied(seconds))                # when seconds is not None
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

from fastapi import Depends, Header
from pydantic import ValidationError

from visionq.jobs.events import JobEvents
from visionq.jobs.records import JobRecord
from visionq.jobs.store import JobStore

#: The longest wait a client may ask for (API.md); longer ones are cut to it.
MAX_WAIT = 60
PREFERENCE_APPLIED = "Preference-Applied"

#: The OpenAPI entry of the `Preference-Applied` response header, for a route's `responses`.
PREFERENCE_APPLIED_DOC: dict[str, Any] = {
    PREFERENCE_APPLIED: {
        "description": "`wait=N` when the request carried a valid `Prefer: wait`: the seconds it was held at most "
        f"(N ≤ {MAX_WAIT}).",
        "schema": {"type": "string", "example": "wait=30"},
    }
}


#: The `Prefer` request header, as the OpenAPI document describes it.
PREFER_WAIT_DOC = (
    f"`wait=N` (RFC 7240): hold the request up to N seconds (at most {MAX_WAIT}) until the job ends. Other "
    "preferences, and a malformed one, are ignored."
)


def parse_prefer_wait(header: str | None) -> int | None:
    """The seconds asked for by a `Prefer` header's `wait` preference, cut to MAX_WAIT; None when there is none or
    it is malformed (RFC 7240: an unknown or broken preference is ignored, never refused).

    >>> parse_prefer_wait("respond-async, wait=10"), parse_prefer_wait("wait=999"), parse_prefer_wait("wait=soon")
    (10, 60, None)
    """
    if not header:
        return None
    for preference in header.split(","):
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        # Only the first instance of a preference counts (RFC 7240 §2); its value may be a quoted string.
        value = value.strip().removeprefix('"').removesuffix('"')
        if not (value.isascii() and value.isdigit()):
            return None
        return min(int(value), MAX_WAIT)
    return None


async def prefer_wait(
    prefer: Annotated[
        str | None,
        Header(
            alias="Prefer",
            description=PREFER_WAIT_DOC,
            examples=["wait=30"],
        ),
    ] = None,
) -> int | None:
    return parse_prefer_wait(prefer)


PreferWaitDep = Annotated[int | None, Depends(prefer_wait)]
"""The seconds of a request's `Prefer: wait`, or None."""


def preference_applied(seconds: int | None) -> dict[str, str]:
    """The `Preference-Applied` header of an answer to a request whose `Prefer: wait` was `seconds` (none for None)."""
    return {} if seconds is None else {PREFERENCE_APPLIED: f"wait={seconds}"}


async def wait_for_end(
    events: JobEvents, store: JobStore, job_id: str, seconds: float
) -> tuple[JobRecord | None, bytes | None]:
    """The job once it has ended, or as it is after `seconds`, with its result JSON when the update that completed
    it carried it (else None: read it with `store.get_result`). The record is None for an unknown or expired job.

    It subscribes to the job's updates before reading it, so an end between the read and the wait is not missed.
    Raises BrokerUnavailable when Redis does not confirm the subscription in time.
    """
    async with events.watch(job_id) as updates:
        record = await store.get(job_id)
        result: bytes | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while record is not None and not record.status.terminal:
                    update = await updates.get()
                    try:
                        if update is not None:
                            record, result = update.apply(record), update.result
                            continue
                    except ValidationError:
                        pass
                    record, result = await store.get(job_id), None  # updates may have been missed: read it again
        return record, result
