"""Every Redis key visionq uses (HLD §3.3), built by functions, with the durations tied to them.

job:{id}:status          hash   the status body fields; TTL = image_ttl + result_ttl, then result_ttl once done
job:{id}:result          string result JSON; TTL = result_ttl
job:{id}:image           string the uploaded bytes (raw, not base64), when no image store holds them; TTL = image_ttl,
                                deleted once processed
job:{id}:events          pub/sub channel: the status body on every change
visionq:jobs:live        zset   job id → deadline (unix s) for the stale-job sweeper
visionq:jobs:processing  set    ids of jobs a worker is on now (visionq_active_jobs)
visionq:queue:{queue}:waiting  zset  job id → priority step × 2^40 + ticket: a queue's pending jobs in the order
                                workers start them, so a job's rank is its queue position (O(log n))
visionq:queue:{queue}:pace     hash  at (unix s of the last start), busy (jobs were waiting then), interval (EWMA
                                of the seconds between starts while jobs wait): the queue's measured pace, for ETAs
visionq:queue:{queue}:unpublished  zset  job id → when its message was to be published: the outbox of a broker apart
                                from job state (jobs/publisher.py), republished when it stays there
visionq:jobs:tickets     string the last ticket given to a queued job (INCR)
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
"""

from __future__ import annotations

import hashlib

JOB_PREFIX = "job:"
BATCH_PREFIX = "batch:"
LIVE_JOBS = "visionq:jobs:live"
PROCESSING_JOBS = "visionq:jobs:processing"
QUEUE_TICKETS = "visionq:jobs:tickets"
JOB_DEADLINES = "visionq:jobs:deadlines"
#: A waiting job's score is its priority step times this, plus its ticket: every higher step's jobs rank first.
TICKET_SPAN = 2**40
WORKER_PREFIX = "visionq:worker:"
WORKERS_SEEN = "visionq:workers"
DELIVERER_PREFIX = "visionq:deliverer:"
JOB_STATS = "visionq:stats:jobs"
ARCHIVE_OUTBOX = "visionq:archive:outbox"
CALLBACKS_DUE = "visionq:callbacks:due"
DEAD_LETTERS = "visionq:dlq"
MODELS_LATEST = "visionq:models:latest"
BREAKER_PREFIX = "visionq:breaker:"
PROBE_SUFFIX = ":probe"
MODELS_LOAD = "visionq:models:load"
MODELS_UNLOAD = "visionq:models:unload"
INFERENCE_STATS_PREFIX = "visionq:stats:inference:"
IMAGE_SWEEP_LOCK = "visionq:lock:images"
REPLICATION_PROBE = "visionq:replication:probe"
#: kombu's hash of delivered, unacknowledged messages (its Redis transport's default `unacked_key`).
BROKER_UNACKED = "unacked"
#: Separator kombu puts between a queue's name and its priority step.
PRIORITY_SEPARATOR = ":"
#: Heartbeats older than this many intervals mean the worker is gone.
HEARTBEAT_MISSES = 3


def status(job_id: str) -> str:
    return f"job:{job_id}:status"


def result(job_id: str) -> str:
    return f"job:{job_id}:result"


def image(job_id: str) -> str:
    return f"job:{job_id}:image"


def events(job_id: str) -> str:
    return f"job:{job_id}:events"


def deliveries(job_id: str) -> str:
    return f"job:{job_id}:deliveries"


def job_id_from_events(channel: str) -> str:
    return channel.removeprefix(JOB_PREFIX).removesuffix(":events")


def result_cache(scope: str, request_digest: str) -> str:
    """Hashed scope (an owner, or `*`): any owner name makes a key of bounded length."""
    return f"visionq:cache:{hashlib.sha256(scope.encode()).hexdigest()[:16]}:{request_digest}"


def cache_followers(entry: str) -> str:
    return f"{entry}:followers"


def idempotency(owner: str, key: str) -> str:
    """Hashed, so that any header value makes a well-formed key of bounded length."""
    return f"visionq:idem:{owner}:{hashlib.sha256(key.encode()).hexdigest()}"


def api_key_cache(key_hash: str) -> str:
    return f"visionq:apikey:{key_hash}"


def revoked_key(key_id: str) -> str:
    return f"visionq:revoked:{key_id}"


def refresh_token(token: str) -> str:
    return f"visionq:refresh:{hashlib.sha256(token.encode()).hexdigest()}"


def rate_limit(who: str, window: int) -> str:
    return f"visionq:ratelimit:{who}:{window}"


def breaker(model_ref: str) -> str:
    return f"{BREAKER_PREFIX}{model_ref}"


def breaker_probe(model_ref: str) -> str:
    return f"{BREAKER_PREFIX}{model_ref}{PROBE_SUFFIX}"


def deliverer(name: str) -> str:
    return f"{DELIVERER_PREFIX}{name}"


def worker(name: str) -> str:
    return f"{WORKER_PREFIX}{name}"


def inference_stats(model_ref: str) -> str:
    return f"{INFERENCE_STATS_PREFIX}{model_ref}"


def waiting(queue: str) -> str:
    return f"visionq:queue:{queue}:waiting"


def pace(queue: str) -> str:
    return f"visionq:queue:{queue}:pace"


def unpublished(queue: str) -> str:
    return f"visionq:queue:{queue}:unpublished"


def queue_lock(queue: str) -> str:
    return f"visionq:lock:queue:{queue}"


def requeue_lock(queue: str) -> str:
    return f"visionq:lock:requeue:{queue}"


def priority_list(queue: str, broker_priority: int) -> str:
    """The Redis list holding a queue's messages of one priority step (kombu's `_q_for_pri`)."""
    return f"{queue}{PRIORITY_SEPARATOR}{broker_priority}" if broker_priority else queue
