"""The result cache (HLD §9.1): the same image bytes, asked of the same model version with the same options by the
same owner, reuse the finished result instead of running the model again.

- An entry (`keys.result_cache`) is a hash: `leader`, the job that computes the result, then `result`, its result
  JSON once it completed with its own model. It lives as long as results do (`result_ttl`).
- A submit that finds a result is completed at once (`scripts.CACHED`); one that finds only a leader becomes its
  follower: queued as usual, but completed from the leader's result (single flight, across every API process,
  since the entry is in Redis); one that finds nothing becomes the leader.
- A leader that fails ends its entry, and its followers run on their own.

Entries are per owner unless `VISIONQ_RESULT_CACHE_SHARED` says otherwise: a shared hit would tell one owner that
another sent the same image.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import orjson

from visionq.jobs import keys
from visionq.jobs.records import JobRecord, isoformat, parse_time
from visionq.wire.jobs import ResultBody

HIT = "hit"
MISS = "miss"
#: The scope of an entry shared by every owner.
SHARED = "*"


def entry_key(record: JobRecord, *, shared: bool, shard: str = "") -> str:
    """The cache entry a job reads and fills: its image's digest, its model version and the options that change
    an answer (`top_k`, whether a fallback may serve it), under its owner or shared; in the job's `shard`."""
    assert record.image_sha256 is not None, "a job's image is checked before it is made"
    return keys.result_cache(*entry_name(record, shared=shared), shard)


def entry_name(record: JobRecord, *, shared: bool) -> tuple[str, str]:
    """The scope and request digest that name a job's cache entry, whatever its shard."""
    request = "\n".join(
        (record.image_sha256 or "", record.model_version, str(record.top_k), str(record.allow_fallback))
    )
    return SHARED if shared else record.owner, hashlib.sha256(request.encode()).hexdigest()


def reused(result_json: bytes | str, record: JobRecord, now: datetime) -> ResultBody:
    """The result of `record`'s job served from another job's result: the same predictions and receipt, its own
    id and times (`processing_time` 0: no worker picked it up), `metadata.cache` "hit"."""
    source = ResultBody.model_validate_json(result_json)
    waited = max(0.0, (now - parse_time(record.created_at)).total_seconds())
    metadata = source.metadata.model_copy(
        update={"queue_time": waited, "total_time": waited, "batch_size": None, "batch_wait": None, "cache": HIT}
    )
    return source.model_copy(
        update={
            "job_id": record.job_id,
            "created_at": record.created_at,
            "completed_at": isoformat(now),
            "processing_time": 0.0,
            "metadata": metadata,
        }
    )


def result_json(result: ResultBody) -> bytes:
    return orjson.dumps(result.model_dump(mode="json"))
