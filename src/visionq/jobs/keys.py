"""Every Redis key visionq uses (HLD §3.3), built by functions, with the durations tied to them.

job:{id}:status          hash   the status body fields; TTL = image_ttl + result_ttl, then result_ttl once done
job:{id}:result          string result JSON; TTL = result_ttl
job:{id}:image           string the uploaded bytes (raw, not base64), when no image store holds them; TTL = image_ttl,
                                deleted once processed
job:{id}:events          pub/sub channel: the status body on every change
visionq:jobs:live        zset   job id → deadline (unix s) for the stale-job sweeper
visionq:jobs:processing  set    ids of jobs a worker is on now (visionq_active_jobs)
visionq:queue:{queue}:waiting  zset  job id → priority step × 2^49 + ticket: a queue's pending jobs in the order
                                workers start them, so a job's rank is its queue position (O(log n))
visionq:queue:{queue}:pace     hash  at (unix s of the last start), busy (jobs were waiting then), interval (EWMA
                                of the seconds between starts while jobs wait): the queue's measured pace, for ETAs
visionq:queue:{queue}:unpublished  zset  job id → when its message was to be published: the outbox of a broker apart
                                from job state (jobs/publisher.py), republished when it stays there
visionq:jobs:tickets     string a counter that orders the tickets of one millisecond
visionq:jobs:deadlines   zset   job id → its `deadline` (unix s), while pending: expired when it passes
visionq:worker:{name}    hash   heartbeat of one worker process; TTL = 3 heartbeat intervals
visionq:deliverer:{name} string heartbeat of one callbacks worker process; TTL = 10 s
visionq:workers          zset   worker process → when its heartbeat goes stale (cheap counting)
visionq:archive:outbox   zset   job id → when it changed: jobs whose archive row is behind (see archive/archiver.py)
visionq:dlq              zset   job id → when it was dead-lettered: jobs that used up their attempts
visionq:callbacks:due    zset   job id → when it ended: finished jobs whose callback is still to be queued
job:{id}:deliveries      list   one JSON object per callback delivery attempt; TTL = result_ttl
visionq:cache:{sha256(scope)[:16]}:{sha256(request)}  hash  leader (job id), result (its result JSON once
                                complete): the result cache (jobs/cache.py); TTL = result_ttl
visionq:cache:…:followers  list  jobs waiting for the leader's result (single flight)
batch:{id}, batch:{id}:items   a batch and its items (jobs/batches.py); `batch:{id}` also names it in the
                                callbacks-due set
visionq:idem:{owner}:{sha256(key)}  string  an Idempotency-Key's request fingerprint and original answer; TTL 24 h
visionq:apikey:{sha256}  string the principal of an API key (JSON), or "revoked"; a cache of the database, 60 s
visionq:revoked:{key_id} string set when a key is revoked; refuses its access tokens until they expire
visionq:refresh:{sha256} string a refresh token's key id and role; TTL = refresh_token_ttl, deleted on use
visionq:ratelimit:{who}:{minute}  string requests counted in one fixed one-minute window; TTL 60 s
visionq:models:latest    string the model `latest` means, set by an admin (else VISIONQ_DEFAULT_MODEL)
visionq:models:load      set    model refs every worker should keep loaded (admin: load)
visionq:models:unload    hash   model ref → when an admin asked workers to unload it (unix s)
visionq:breaker:{ref}    hash   a model's circuit breaker: state, failures in a row, opened_at, reason
visionq:breaker:{ref}:probe  string  held by the one job probing a half-open breaker; TTL = cool-down
visionq:stats:jobs       hash   terminal jobs per status (visionq_jobs_total); total processing seconds
visionq:stats:inference:{model_ref}  hash  histogram buckets of inference seconds, batch sizes, top-1 confidence
{queue}, {queue}:3 …     list   Celery's priority lists (kombu's Redis transport, sep ":")
unacked                  hash   kombu's messages delivered to a worker and not yet acknowledged
visionq:replication:probe  string  a counter written before a WAIT that must cover everything written so far
visionq:lock:requeue:{queue}  string  held by the one worker of a queue looking for jobs whose message was lost
visionq:lock:images      string held by the one worker sweeping the image store of images no job holds
visionq:lock:queue:{queue}  string  held by the one API process expiring and promoting a queue's jobs this pass

On a Redis Cluster (`Shards`), the queue-wide structures above that Lua steps change with a job (live, processing,
waiting, pace, outbox, tickets, deadlines, workers, stats:jobs, archive outbox, dlq, callbacks due, idem, cache) are
kept once per shard, as `visionq:{tag}:…` (`visionq:{vq61}:jobs:live`); a job's own keys are tagged with its id
(`job:{id}:status`), chosen to hash to its shard's slot, and so are a batch's (`batch:{id}`). The rest (workers'
heartbeats, models, breakers, credentials, rate limits, locks, stats:inference) are single keys, each in the slot of
its name: no step touches two of them. On one Redis the one shard is "" and the names read as listed.
"""

from __future__ import annotations

import hashlib
import math
import random
import uuid
import zlib
from binascii import crc_hqx
from functools import cache

JOB_PREFIX = "job:"
BATCH_PREFIX = "batch:"
#: A waiting job's score is its priority step times this, plus its ticket: every higher step's jobs rank first.
TICKET_SPAN = 2**49
#: A ticket counts milliseconds from here (2025-01-01, unix s), times TICKETS_PER_MS: 2^40 ms, to 2059, fit the span.
TICKET_EPOCH = 1_735_689_600
TICKETS_PER_MS = 512


def first_ticket(moment: float) -> int:
    """The first ticket of the millisecond `moment` (unix s) falls in, as scripts._WAITING counts them: a job that
    arrived at its priority before that millisecond has a lower one."""
    return math.floor((moment - TICKET_EPOCH) * 1000) * TICKETS_PER_MS


WORKER_PREFIX = "visionq:worker:"
DELIVERER_PREFIX = "visionq:deliverer:"
MODELS_LATEST = "visionq:models:latest"
BREAKER_PREFIX = "visionq:breaker:"
PROBE_SUFFIX = ":probe"
MODELS_LOAD = "visionq:models:load"
MODELS_UNLOAD = "visionq:models:unload"
INFERENCE_STATS_PREFIX = "visionq:stats:inference:"
IMAGE_SWEEP_LOCK = "visionq:lock:images"
#: kombu's hash of delivered, unacknowledged messages (its Redis transport's default `unacked_key`).
BROKER_UNACKED = "unacked"
#: Separator kombu puts between a queue's name and its priority step.
PRIORITY_SEPARATOR = ":"
#: Heartbeats older than this many intervals mean the worker is gone.
HEARTBEAT_MISSES = 3


def status(job_id: str) -> str:
    return f"job:{{{job_id}}}:status"


def result(job_id: str) -> str:
    return f"job:{{{job_id}}}:result"


def image(job_id: str) -> str:
    return f"job:{{{job_id}}}:image"


def events(job_id: str) -> str:
    return f"job:{{{job_id}}}:events"


def deliveries(job_id: str) -> str:
    """A job's delivery log, or a batch's (`job_id` the member `batch:{id}` that names it in the due set)."""
    return f"{job_id}:deliveries" if job_id.startswith(BATCH_PREFIX) else f"job:{{{job_id}}}:deliveries"


def job_id_from_events(channel: str) -> str:
    return channel.removeprefix(JOB_PREFIX + "{").removesuffix("}:events")


def result_cache(scope: str, request_digest: str, shard: str) -> str:
    """Hashed scope (an owner, or `*`): any owner name makes a key of bounded length."""
    return _in(shard, f"cache:{hashlib.sha256(scope.encode()).hexdigest()[:16]}:{request_digest}")


def cache_followers(entry: str) -> str:
    return f"{entry}:followers"


def idempotency(owner: str, key: str, shards: Shards) -> str:
    """Hashed, so that any header value makes a well-formed key of bounded length; in the shard its name picks
    (the job it makes is made there)."""
    name = f"idem:{owner}:{hashlib.sha256(key.encode()).hexdigest()}"
    return _in(shards.for_name(name), name)


def api_key_cache(key_hash: str) -> str:
    return f"visionq:apikey:{key_hash}"


def revoked_key(key_id: str) -> str:
    return f"visionq:revoked:{key_id}"


def refresh_token(token: str) -> str:
    return f"visionq:refresh:{hashlib.sha256(token.encode()).hexdigest()}"


def rate_limit(who: str, window: int) -> str:
    return f"visionq:ratelimit:{who}:{window}"


def breaker(model_ref: str) -> str:
    """Tagged with the ref, as its probe is: the breaker's steps touch both (one slot on a Redis Cluster)."""
    return f"{BREAKER_PREFIX}{{{model_ref}}}"


def breaker_probe(model_ref: str) -> str:
    return f"{BREAKER_PREFIX}{{{model_ref}}}{PROBE_SUFFIX}"


def deliverer(name: str) -> str:
    return f"{DELIVERER_PREFIX}{name}"


def worker(name: str) -> str:
    return f"{WORKER_PREFIX}{name}"


def inference_stats(model_ref: str) -> str:
    return f"{INFERENCE_STATS_PREFIX}{model_ref}"


def waiting(queue: str, shard: str) -> str:
    return _in(shard, f"queue:{queue}:waiting")


def pace(queue: str, shard: str) -> str:
    return _in(shard, f"queue:{queue}:pace")


def unpublished(queue: str, shard: str) -> str:
    return _in(shard, f"queue:{queue}:unpublished")


def queue_lock(queue: str) -> str:
    return f"visionq:lock:queue:{queue}"


def requeue_lock(queue: str) -> str:
    return f"visionq:lock:requeue:{queue}"


def priority_list(queue: str, broker_priority: int) -> str:
    """The Redis list holding a queue's messages of one priority step (kombu's `_q_for_pri`)."""
    return f"{queue}{PRIORITY_SEPARATOR}{broker_priority}" if broker_priority else queue


# Queue-wide structures: one set per shard of job state (`Shards`); on one Redis, the one shard is "" and the names
# read as they always did.


def _in(shard: str, name: str) -> str:
    return f"visionq:{{{shard}}}:{name}" if shard else f"visionq:{name}"


def live_jobs(shard: str) -> str:
    return _in(shard, "jobs:live")


def processing_jobs(shard: str) -> str:
    return _in(shard, "jobs:processing")


def queue_tickets(shard: str) -> str:
    return _in(shard, "jobs:tickets")


def job_deadlines(shard: str) -> str:
    return _in(shard, "jobs:deadlines")


def workers_seen(shard: str) -> str:
    return _in(shard, "workers")


def job_stats(shard: str) -> str:
    return _in(shard, "stats:jobs")


def archive_outbox(shard: str) -> str:
    return _in(shard, "archive:outbox")


def callbacks_due(shard: str) -> str:
    return _in(shard, "callbacks:due")


def dead_letters(shard: str) -> str:
    return _in(shard, "dlq")


def replication_probe(shard: str) -> str:
    return _in(shard, "replication:probe")


# The one-Redis names, for readers that know they are on one (tests, the single-server tools).
LIVE_JOBS = live_jobs("")
PROCESSING_JOBS = processing_jobs("")
QUEUE_TICKETS = queue_tickets("")
JOB_DEADLINES = job_deadlines("")
WORKERS_SEEN = workers_seen("")
JOB_STATS = job_stats("")
ARCHIVE_OUTBOX = archive_outbox("")
CALLBACKS_DUE = callbacks_due("")
DEAD_LETTERS = dead_letters("")

#: Redis Cluster's hash slots (a key's slot: CRC16 of its hash tag, modulo this).
SLOTS = 16384
#: Shards of job state on a Redis Cluster: up to this many masters share the work (docs/scaling.md). Fixed: a job's
#: shard follows from its id, so it cannot change while jobs live.
CLUSTER_SHARDS = 32


def slot(tag: str) -> int:
    """The cluster slot of a key whose hash tag is `tag` (Redis's CRC16, XMODEM, which `crc_hqx` computes)."""
    return crc_hqx(tag.encode(), 0) % SLOTS


class Shards:
    """Where jobs and the queue-wide structures they change with live.

    Every Lua step changes one job and its queue's structures (the live set, the waiting jobs, statistics, ...)
    together, so on a Redis Cluster they must share a slot. Job state is cut into `CLUSTER_SHARDS` shards, each a
    whole set of those structures under one hash tag (`visionq:{tag}:jobs:live`), and a job's id is chosen to
    hash to its shard's slot: its own keys (`job:{id}:status`, tagged with the id) land beside them. Readers of
    queue-wide figures sum over the shards. The shards' slots are spread evenly over the slot space, so every
    master of an evenly split cluster holds some. On one Redis there is one shard, "", and any id is fine.
    """

    def __init__(self, count: int = 1) -> None:
        self.names: tuple[str, ...] = ("",) if count == 1 else tuple(_anchor(i, count) for i in range(count))
        self._by_slot = {slot(name): name for name in self.names if name}

    @property
    def clustered(self) -> bool:
        return bool(self._by_slot)

    def of(self, job_id: str) -> str:
        """The shard of a job (or batch) by its id, or by a member naming it (`batch:{id}`)."""
        if not self._by_slot:
            return ""
        tag = job_id[job_id.index("{") + 1 : job_id.index("}")] if "{" in job_id else job_id
        try:
            return self._by_slot[slot(tag)]
        except KeyError:
            raise ValueError(f"{job_id!r} is not the id of a job of this cluster's job state") from None

    def for_name(self, name: str) -> str:
        """The shard of a named thing that jobs join (an Idempotency-Key's entry, a result cache's), stable."""
        return self.names[zlib.crc32(name.encode()) % len(self.names)]

    def new_id(self, shard: str | None = None) -> str:
        """A new job (or batch) id, a UUID 4, in `shard` (any shard when None)."""
        if not self._by_slot:
            return str(uuid.uuid4())
        return id_in_slot(slot(shard if shard is not None else random.choice(self.names)))


def _anchor(index: int, count: int) -> str:
    """The hash tag of shard `index` of `count`: the first `vq<n>` whose slot is in the shard's even share of the
    slot space."""
    low, high = index * SLOTS // count, (index + 1) * SLOTS // count
    return next(tag for tag in (f"vq{n}" for n in range(1_000_000)) if low <= slot(tag) < high)


def id_in_slot(target: int) -> str:
    """A random UUID 4 whose slot is `target`: its last four hex digits chosen for it. CRC16 is linear, so the CRC
    of the id is that of its first 32 characters carried through four zero bytes, XOR that of the last four alone:
    the table of the latter gives digits for any wanted CRC (one of four, the slot keeping its low 14 bits)."""
    suffixes = _suffixes()
    while True:
        head = str(uuid.uuid4())[:-4]
        carried = crc_hqx(b"\0\0\0\0", crc_hqx(head.encode(), 0))
        for high in range(0, 1 << 16, SLOTS):
            suffix = suffixes.get((target + high) ^ carried)
            if suffix is not None:
                return head + suffix


@cache
def _suffixes() -> dict[int, str]:
    """CRC16 of four lowercase hex digits (from 0) → those digits."""
    return {crc_hqx(digits.encode(), 0): digits for digits in (f"{n:04x}" for n in range(1 << 16))}
