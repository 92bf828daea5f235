"""Submission: from an uploaded image to a queued job, the whole protocol in one place.

`POST /classify` reads the upload and calls `Submitter.submit` (one image) or `submit_many` (several parts).
A submit checks the request (model, callback, Redis's memory), checks the image's header and completeness,
puts the image in the image store (when one is set), and then makes and queues the job in ONE round trip
(`JobStore.submit`): the record, the image reference and the Celery message together, from the API's event
loop, with no thread hop into Celery's publisher. A job therefore exists if and only if it is queued, and runs
exactly once; a client that saw the round trip fail (its reply lost to a Redis restart) retries with its
Idempotency-Key and gets the job back if it was made.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from visionq import errors
from visionq.api.backpressure import Backpressure, queue_full
from visionq.api.problems import UNREACHABLE_RETRY_AFTER
from visionq.callbacks.targets import check_callback_url
from visionq.images import ImageStore
from visionq.imaging.decode import CheckedImage, check_image
from visionq.inference.sources import ModelSources
from visionq.inference.spec import ModelSpec
from visionq.jobs import cache
from visionq.jobs.idempotency import RESERVATION_TTL, IdempotencyKeys, answer_entry, fingerprint
from visionq.jobs.model_requests import LatestChoice
from visionq.jobs.queue import CLASSIFY_TASK
from visionq.jobs.records import JobRecord, isoformat, parse_time, utcnow
from visionq.jobs.replication import Unconfirmed
from visionq.jobs.store import JobStore
from visionq.settings import Settings
from visionq.telemetry import current_traceparent, publishing
from visionq.wire.schemas import ClassifyForm, JobAccepted, Links
from visionq.wire.states import JobStatus, Stage

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Largest image checked and put in a directory (or Redis) on the event loop itself (about half a millisecond for
#: this size); a larger one, or any for a remote store, goes to the thread pool, whose hop costs more than that.
INLINE_BYTES = 1024 * 1024
#: Seconds an API process goes on freeing the Idempotency-Key of a submit it could not finish with Redis away,
#: and between tries. Well within RESERVATION_TTL, so the reservation it frees is still its own request's.
SETTLE_FOR, SETTLE_EVERY = RESERVATION_TTL / 3, 0.5


@dataclass(frozen=True)
class Accepted:
    body: JobAccepted
    replayed: bool = False
    """The original answer of an Idempotency-Key, given again (200, not 202)."""


@dataclass(frozen=True)
class Part:
    """One image of a request of several."""

    data: bytes
    filename: str | None = None


@dataclass(frozen=True)
class _Checked:
    digest: str
    header: CheckedImage


class Submitter:
    """Makes and queues jobs for one API process.

    >>> accepted = await submitter.submit(owner="anonymous", form=ClassifyForm(), image=data)  # doctest: +SKIP
    >>> accepted.body.job_id                                                                  # doctest: +SKIP
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: JobStore,
        images: ImageStore | None,
        sources: ModelSources,
        latest: LatestChoice,
        backpressure: Backpressure,
    ) -> None:
        self.settings = settings
        self.store = store
        self.images = images
        self.sources = sources
        self.latest = latest
        self.backpressure = backpressure
        self.keys = IdempotencyKeys(store.redis, store.shards)
        self._settling: set[asyncio.Task[None]] = set()

    async def submit(
        self,
        *,
        owner: str,
        form: ClassifyForm,
        image: bytes,
        request_id: str | None = None,
        idempotency_key: str | None = None,
        cached: bool = True,
    ) -> Accepted:
        """Make and queue one job; with `idempotency_key`, the same request again gets the original answer.
        `cached=False` (`Cache-Control: no-cache`): never served from the result cache."""
        spec = await self.admit(form)
        shards = self.store.shards
        if idempotency_key is None:
            if shards.clustered and cached and self.settings.result_cache:
                # The job is made in the shard of its cache entry, where identical submits meet (keys.Shards).
                checked = await self._off_loop(image, self._check, image)
                job_id = shards.new_id(shards.for_name(self._cache_name(owner, form, spec, checked)))
                await self._off_loop(image, self._put, job_id, image)
            else:
                job_id = shards.new_id()
                checked = await self._off_loop(image, self._check_and_put, job_id, image)
            return Accepted(await self._make(job_id, owner, form, spec, checked, image, request_id, cached=cached))
        job_id = shards.new_id(self.keys.shard(owner, idempotency_key))  # made beside its key's answer
        checked = await self._off_loop(image, self._check, image)
        request = fingerprint(checked.digest, *_form_print(form))
        original = await self.keys.reserve(owner, idempotency_key, request)
        if original is not None:
            # The answer was written with its job, on this master; where replicas are required, the replay waits
            # until they hold it too, as the first answer would have (a 503 after its wait timed out is retried).
            try:
                await self.store.confirm_durable(self.keys.shard(owner, idempotency_key))
            except Unconfirmed as exc:
                raise _unconfirmed(exc) from exc
            except RedisError as exc:
                raise _unreachable() from exc
            return Accepted(JobAccepted.model_validate(original), replayed=True)
        try:
            if self.images is not None:
                await self._off_loop(image, self._put, job_id, image)
            now = isoformat(utcnow())
            answer = _accepted(job_id, now, spec.ref, form, None)  # its estimate is added in the same step
            entry = answer_entry(owner, idempotency_key, request, answer.model_dump(mode="json"), self.keys.shards)
            body = await self._make(
                job_id, owner, form, spec, checked, image, request_id, remember=entry, now=now, cached=cached
            )
        except BaseException as exc:
            await self._free_key(owner, idempotency_key, job_id, exc)
            raise
        return Accepted(body)

    async def _free_key(self, owner: str, key: str, job_id: str, failure: BaseException) -> None:
        """Free the Idempotency-Key of a submit that failed, so that the client's retry is not answered 409
        until its reservation expires. When the job may have been made (Redis went away during the step, or
        the request was cancelled), only once Redis answers and only if the job does not exist; otherwise now."""
        reservation = self.keys.name(owner, key)
        unsure = isinstance(failure, errors.BrokerUnavailable) and isinstance(failure.__cause__, RedisError)
        if unsure or not isinstance(failure, Exception):
            self._in_background(lambda: self.store.release_unmade(job_id, reservation))
            return
        try:
            await self.keys.release(owner, key)
        except RedisError:
            self._in_background(lambda: self.keys.release(owner, key))

    async def submit_many(
        self,
        *,
        owner: str,
        form: ClassifyForm,
        parts: list[Part],
        request_id: str | None = None,
        cached: bool = True,
        batch_id: str | None = None,
        admitted: ModelSpec | None = None,
    ) -> list[Accepted | errors.VisionqError]:
        """One job per part, in order: each part's answer, or the problem that refused it alone. A problem of
        the whole request (the form, the model, the callback) raises instead, before any job is made. With
        `batch_id`, the jobs are items of that batch (`admitted`: the model the batch's `admit` resolved)."""
        spec = admitted or await self.admit(form)
        answers: list[Accepted | errors.VisionqError] = []
        shard = self.store.shards.of(batch_id) if batch_id else None  # a batch's jobs live in its shard
        for part in parts:
            job_id = self.store.shards.new_id(shard)
            try:
                if len(part.data) > self.settings.max_upload_bytes:
                    raise errors.PayloadTooLarge(f"the image is over {self.settings.max_upload_bytes} bytes")
                checked = await self._off_loop(part.data, self._check_and_put, job_id, part.data)
                made = await self._make(
                    job_id, owner, form, spec, checked, part.data, request_id, cached=cached, batch_id=batch_id
                )
                answers.append(Accepted(made))
            except errors.VisionqError as refused:
                answers.append(refused)
        return answers

    async def admit(self, form: ClassifyForm) -> ModelSpec:
        """What refuses the whole request: an unknown model, a callback the service cannot send, a full Redis."""
        settings = self.settings
        # A version published since the catalog's last listing is listed now, so that a job for it is accepted.
        spec = await self.sources.resolve_async(form.model_version, latest=await self.latest.get())
        if form.callback_url is not None:
            if settings.callback_secret is None:
                raise errors.ValidationFailed(
                    "callbacks are off on this service: it has no VISIONQ_CALLBACK_SECRET to sign them with"
                )
            check_callback_url(str(form.callback_url), allow_private=settings.callback_allow_private)
        await self.backpressure.check(form.priority, lambda: self.store.estimate_wait(form.priority.broker_priority))
        return spec

    async def _off_loop(self, image: bytes, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)`, on `image`, on the event loop when it is quick (see INLINE_BYTES), else in the thread
        pool."""
        remote = self.images is not None and self.images.name != "directory"
        if len(image) <= INLINE_BYTES and not remote:
            return work(*args)
        return await run_in_threadpool(work, *args)

    def _check(self, image: bytes) -> _Checked:
        # Checked, not decoded: the worker decodes it once, for the model. The digest goes to the archive, and
        # idempotency compares requests by it.
        header = check_image(image, max_pixels=self.settings.max_pixels)
        return _Checked(hashlib.sha256(image).hexdigest(), header)

    def _cache_name(self, owner: str, form: ClassifyForm, spec: ModelSpec, checked: _Checked) -> str:
        """What names the cache entry a job of this request would read (as `_make` builds its record)."""
        allow_fallback = self.settings.allow_fallback if form.fallback is None else form.fallback
        probe = JobRecord(job_id="", status=JobStatus.PENDING, stage=Stage.QUEUED, created_at="", updated_at="",
                          model_version=spec.ref, priority=form.priority, top_k=form.top_k, image_format="",
                          image_width=0, image_height=0, owner=owner, image_sha256=checked.digest,
                          allow_fallback=allow_fallback)  # fmt: skip
        return ":".join(cache.entry_name(probe, shared=self.settings.result_cache_shared))

    def _put(self, job_id: str, image: bytes) -> None:
        if self.images is not None:
            self.images.put(job_id, image)

    def _check_and_put(self, job_id: str, image: bytes) -> _Checked:
        """`_check`, then the image into its store: one hop into the thread pool for both."""
        checked = self._check(image)
        self._put(job_id, image)
        return checked

    async def _make(
        self,
        job_id: str,
        owner: str,
        form: ClassifyForm,
        spec: ModelSpec,
        checked: _Checked,
        image: bytes,
        request_id: str | None,
        *,
        remember: tuple[str, bytes] | None = None,
        now: str | None = None,
        cached: bool = True,
        batch_id: str | None = None,
    ) -> JobAccepted:
        settings = self.settings
        moment = utcnow()
        now = now or isoformat(moment)
        deadline = form.deadline_at(moment)
        record = JobRecord(
            job_id=job_id,
            status=JobStatus.PENDING,
            stage=Stage.QUEUED,
            created_at=now,
            updated_at=now,
            model_version=spec.ref,
            priority=form.priority,
            top_k=form.top_k,
            callback_url=str(form.callback_url) if form.callback_url else None,
            image_format=checked.header.format,
            image_width=checked.header.width,
            image_height=checked.header.height,
            owner=owner,
            image_sha256=checked.digest,
            request_id=request_id,
            traceparent=current_traceparent(),
            allow_fallback=settings.allow_fallback if form.fallback is None else form.fallback,
            max_wait=min((w for w in (form.max_wait, settings.max_queue_wait) if w), default=None),
            image_store=self.images.name if self.images is not None else "redis",
            deadline=isoformat(deadline) if deadline is not None else None,
            batch_id=batch_id,
        )
        if cached and settings.result_cache:
            shard = self.store.shards.of(job_id)
            record.cache_key = cache.entry_key(record, shared=settings.result_cache_shared, shard=shard)
        try:
            with publishing(CLASSIFY_TASK) as headers:
                submitted = await self.store.submit(
                    record,
                    queue=settings.queue,
                    image=None if self.images is not None else image,
                    max_queued=settings.max_queued_jobs,
                    remember=remember,
                    headers=headers,
                    deadline=deadline.timestamp() if deadline is not None else None,
                )
        except Unconfirmed as exc:
            # Made, but no replica holds it yet: a failover now could lose it, so no 202. It may still run; a retry
            # with the same Idempotency-Key gets this job back rather than making another.
            raise _unconfirmed(exc) from exc
        except RedisError as exc:
            # Made or not (a reply lost to a Redis restart), its image stays: the image sweeper removes it if no
            # job holds it. A retry with the same Idempotency-Key gets the job back if it was made.
            raise _unreachable() from exc
        if submitted.cached is not None:
            return await self._from_cache(record, submitted.cached, remember, spec.ref, form)
        if not submitted.accepted:
            if self.images is not None:
                await run_in_threadpool(self.images.delete, job_id)
            share = "" if form.priority.shed_share == 1 else f" for `{form.priority.value}` jobs (lower ones first)"
            raise queue_full(
                f"{submitted.queued} jobs are waiting, the most this service queues{share}; try again later",
                submitted.wait,
            )
        return _accepted(job_id, now, spec.ref, form, submitted.wait)

    async def _from_cache(
        self, record: JobRecord, result: bytes, remember: tuple[str, bytes] | None, model_ref: str, form: ClassifyForm
    ) -> JobAccepted:
        """Make the job completed at once with an identical job's result: no queue, no worker, no inference."""
        hit = cache.reused(result, record, utcnow())
        done = record.model_copy(
            update={"status": JobStatus.COMPLETED, "stage": Stage.COMPLETED, "progress": 100,
                    "updated_at": hit.completed_at, "cache_key": None}
        )  # fmt: skip
        try:
            await self.store.record_hit(done, cache.result_json(hit), remember=remember)
        except RedisError as exc:  # made or not, a retry finds the job or the cache again
            raise _unreachable() from exc
        if self.images is not None:  # stored before the cache was asked; never read
            await run_in_threadpool(self.images.delete, record.job_id)
        # Accepted as any job is (API.md fixes a 202's `status` as `pending`): complete by the client's first look.
        return _accepted(record.job_id, record.created_at, model_ref, form, 0.0)

    def _in_background(self, attempt: Callable[[], Awaitable[None]]) -> None:
        """Try `attempt` again every `SETTLE_EVERY` seconds until Redis answers, for `SETTLE_FOR` seconds at
        most, without holding up the request's answer."""

        async def run() -> None:
            deadline = time.monotonic() + SETTLE_FOR
            while True:
                try:
                    await attempt()
                    return
                except RedisError:
                    if time.monotonic() >= deadline:
                        log.warning("gave up freeing an Idempotency-Key: Redis still unreachable")
                        return
                    await asyncio.sleep(SETTLE_EVERY)

        task = asyncio.create_task(run())
        self._settling.add(task)  # the event loop holds tasks weakly
        task.add_done_callback(self._settling.discard)


def _unconfirmed(exc: Unconfirmed) -> errors.BrokerUnavailable:
    return errors.BrokerUnavailable(
        f"the job could not be confirmed on a Redis replica ({exc}); try again shortly, with the same "
        "Idempotency-Key if you sent one",
        retry_after=UNREACHABLE_RETRY_AFTER,
    )


def _unreachable() -> errors.BrokerUnavailable:
    return errors.BrokerUnavailable(
        "the job store is unreachable; try again shortly (with the same Idempotency-Key, if you sent one)",
        retry_after=UNREACHABLE_RETRY_AFTER,
    )


def _form_print(form: ClassifyForm) -> tuple[str, ...]:
    """The form fields that make two requests with the same image different requests."""
    return (
        form.model_version,
        form.priority.value,
        str(form.top_k),
        str(form.callback_url or ""),
        str(form.fallback),
        str(form.max_wait),
        str(form.deadline),
    )


def _accepted(job_id: str, created_at: str, model_ref: str, form: ClassifyForm, wait: float | None) -> JobAccepted:
    return JobAccepted(
        job_id=job_id,
        status=JobStatus.PENDING,
        created_at=created_at,
        estimated_completion=None if wait is None else isoformat(parse_time(created_at) + timedelta(seconds=wait)),
        model_version=model_ref,
        priority=form.priority,
        links=Links(status=f"/status/{job_id}", result=f"/result/{job_id}", websocket=f"/ws/{job_id}"),
    )
