"""The image store protocol (a claim check: the job carries an id, the bytes wait here) and its factory.

The API puts an upload once, a worker gets it once, and it is deleted when its job ends; `sweep` removes what a
crash left behind. Every backend turns its own failures into `BrokerUnavailable`, so callers handle one error
whichever store is configured.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection
from typing import Protocol, TypedDict

from visionq.errors import BrokerUnavailable
from visionq.settings import Settings

log = logging.getLogger(__name__)

#: Seconds a client is told to wait (`Retry-After`) when the image store fails.
RETRY_AFTER = 5

#: Old images a sweep lists before it asks `keep` about them and deletes the rest (DeleteObjects' limit on S3).
SWEEP_BATCH = 1000

#: Given the job ids of some old images, those whose image must stay (their job still waits, or may be retried).
KeepFilter = Callable[[list[str]], Collection[str]]

#: What a job id may look like: it becomes a file name and an object key, so no separators and no dot-names.
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class ImageStore(Protocol):
    """Where an uploaded image waits for its worker. Methods are blocking and safe to call from several threads.

    `put` is atomic: a reader sees the whole image or none. `get` of a missing image is None and `delete` of one
    is no error. Any other failure of the store raises `BrokerUnavailable`; an id that is not a plain name (no
    separators, no leading dot) raises ValueError.
    """

    #: The backend, as `image_store` names it: `directory` or `s3`.
    name: str

    def put(self, job_id: str, data: bytes) -> None: ...

    def get(self, job_id: str) -> bytes | None: ...

    def delete(self, job_id: str) -> None: ...

    def sweep(self, older_than: float, *, keep: KeepFilter | None = None) -> int:
        """Remove the images (and leftovers of interrupted writes) stored before `older_than`, a unix time, but
        those `keep` names; return how many were removed. `keep` is asked about `SWEEP_BATCH` ids at a time."""
        ...


def create_image_store(settings: Settings) -> ImageStore | None:
    """The store `settings.image_store` names, or None for `redis` (the jobs package keeps images in the job's
    own keys then)."""
    # Imported here: the backends import this module, and boto3 (a third of a second) only when it is used.
    if settings.image_store == "directory":
        from visionq.images.directory import DirectoryImages

        return DirectoryImages(settings.images_path)
    if settings.image_store == "s3":
        from visionq.images.s3 import S3Images

        assert settings.s3_bucket is not None  # Settings refuses image_store=s3 without a bucket
        return S3Images(settings.s3_bucket, prefix=settings.s3_prefix, **s3_connection(settings))
    return None


class S3Connection(TypedDict):
    """Where and as whom to reach S3-compatible storage: the keyword arguments of `S3Images` and
    `create_s3_client`."""

    endpoint_url: str | None
    region: str | None
    access_key_id: str | None
    secret_access_key: str | None


def s3_connection(settings: Settings) -> S3Connection:
    """The `s3_*` settings that every S3 client of the service shares (the image store, the model repository)."""
    secret = settings.s3_secret_access_key
    return S3Connection(
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=None if secret is None else secret.get_secret_value(),
    )


def check_job_id(job_id: str) -> str:
    """`job_id`, if it is safe as a file name and an object key; ValueError otherwise (a caller's bug)."""
    if not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return job_id


def store_unreachable(where: str, exc: Exception) -> BrokerUnavailable:
    """The error a backend raises (`from exc`) when it fails; the cause is logged for the operator, since the
    client is told only to come back."""
    log.warning("image store unreachable (%s): %s", where, exc)
    return BrokerUnavailable("the image store is unreachable; try again shortly", retry_after=RETRY_AFTER)
