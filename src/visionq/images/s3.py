"""`S3Images`: uploads as objects in S3-compatible storage (AWS S3, MinIO, Google Cloud Storage's XML API)."""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from visionq.images.store import SWEEP_BATCH, KeepFilter, check_job_id, store_unreachable

log = logging.getLogger(__name__)

#: Seconds to open a connection to the store.
CONNECT_TIMEOUT = 3.0
#: Seconds to wait for each read of an answer (not the whole transfer).
READ_TIMEOUT = 10.0
#: Tries of one request, the first included, before its failure reaches the caller. botocore's `standard` mode
#: waits a jittered 50 ms × 2ⁿ between them, so an unreachable store is reported in well under a second.
MAX_ATTEMPTS = 3
#: Connections the client keeps: as many as the API's thread pool (anyio's default, 40) may use at once.
MAX_CONNECTIONS = 40
#: Error codes of an object that is not there: GetObject's NoSuchKey, or a bare 404 from some compatible stores.
_MISSING = frozenset({"NoSuchKey", "NotFound", "404"})


def create_s3_client(
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> Any:
    """A boto3 S3 client for AWS, or for the S3-compatible store at `endpoint_url`, with bounded time-outs and
    retries. Credentials left unset come from boto3's default chain. Thread-safe: one serves every thread."""
    compatible = endpoint_url is not None
    config = Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        max_pool_connections=MAX_CONNECTIONS,
        # Stores other than AWS seldom resolve `<bucket>.<host>` names, and many refuse the checksum headers
        # boto3 sends by default since 1.36 (boto/boto3#4392); AWS itself keeps both defaults.
        s3={"addressing_style": "path"} if compatible else None,
        request_checksum_calculation="when_required" if compatible else "when_supported",
        response_checksum_validation="when_required" if compatible else "when_supported",
    )
    # A session of its own: boto3's module-level default session is shared state that is not thread-safe.
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=config,
    )


class S3Images:
    """Images as objects `<prefix><job_id>` in `bucket`. A PUT is atomic, so readers see whole images only.

    Credentials left unset come from boto3's default chain (`AWS_*` variables, `~/.aws`, an instance or pod
    role). The client is thread-safe: one instance serves every thread of a process.

    >>> images = S3Images("visionq-uploads", endpoint_url="http://minio:9000", region="us-east-1")
    >>> images.put("4f1c2a9e-0d7b-4c55-9a7e-5b0c1d2e3f40", b"<png bytes>")  # images/4f1c2a9e-...
    >>> images.get("4f1c2a9e-0d7b-4c55-9a7e-5b0c1d2e3f40")
    b'<png bytes>'
    """

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "images/",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client: Any = create_s3_client(
            endpoint_url=endpoint_url,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
        )

    def put(self, job_id: str, data: bytes) -> None:
        key = self._key(job_id)
        with self._translated(f"writing {key}"):
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get(self, job_id: str) -> bytes | None:
        key = self._key(job_id)
        with self._translated(f"reading {key}"):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _MISSING:
                    return None
                raise
            with contextlib.closing(response["Body"]) as body:
                data: bytes = body.read()
            return data

    def delete(self, job_id: str) -> None:
        key = self._key(job_id)
        with self._translated(f"deleting {key}"):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def sweep(self, older_than: float, *, keep: KeepFilter | None = None) -> int:
        removed = 0
        old = self._keys_older_than(older_than)
        while True:
            with self._translated(f"sweeping {self.prefix}"):
                batch = list(itertools.islice(old, SWEEP_BATCH))
            if not batch:
                return removed
            if keep is not None:
                kept = set(keep([key.removeprefix(self.prefix) for key in batch]))
                batch = [key for key in batch if key.removeprefix(self.prefix) not in kept]
            if batch:
                with self._translated(f"sweeping {self.prefix}"):
                    removed += self._delete_keys(batch)

    def _keys_older_than(self, older_than: float) -> Iterator[str]:
        # An interrupted PUT leaves nothing behind (S3 stores an object whole or not at all), so old objects
        # under the prefix are all there is to sweep.
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for item in page.get("Contents", []):
                if item["LastModified"].timestamp() < older_than:
                    yield item["Key"]

    def _delete_keys(self, keys: list[str]) -> int:
        """Delete up to `SWEEP_BATCH` keys (DeleteObjects' limit) in one request; return how many went."""
        objects = [{"Key": key} for key in keys]
        response = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
        failed = response.get("Errors", [])
        if failed:
            first = failed[0]
            log.warning(
                "image store: %d of %d old images in s3://%s could not be deleted (%s: %s: %s)",
                len(failed),
                len(keys),
                self.bucket,
                first.get("Key"),
                first.get("Code"),
                first.get("Message"),
            )
        return len(keys) - len(failed)

    def _key(self, job_id: str) -> str:
        return self.prefix + check_job_id(job_id)

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """botocore's errors (connection, time-out, credentials, an error answer) → `BrokerUnavailable`."""
        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            raise store_unreachable(f"{what} in s3://{self.bucket}", exc) from exc
