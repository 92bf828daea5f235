"""All configuration, read from `VISIONQ_*` environment variables and an optional `.env` file.

Settings are built at entry points (`visionq serve|api|worker`, `create_app`) and passed down;
nothing reads the environment at import time. `docs/configuration.md` is generated from the
field docstrings below (`python -m visionq config-docs`), and a test keeps it current.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import parse_qs, urlencode, urlsplit

from pydantic import Field, SecretStr, model_validator

from visionq.client.settings import ClientSettings
from visionq.cpus import available_cpus

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: The Celery brokers visionq runs on: kombu's Redis and Sentinel transports, and AMQP (RabbitMQ).
BROKER_SCHEMES = frozenset({"redis", "rediss", "unix", "sentinel", "amqp", "amqps", "pyamqp"})
#: The SQLite archive's file name in `data_dir`, when no `database_url` is set.
ARCHIVE_FILE = "archive.sqlite3"
#: The folder of the `directory` image store in `data_dir`, when no `image_dir` is set.
IMAGES_DIR = "images"


class AuthMode(StrEnum):
    OFF = "off"
    REQUIRED = "required"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


#: Signing secrets the service refuses with `auth=required` (placeholders people copy from examples).
UNSAFE_SECRETS = frozenset({"", "changethis", "change-me", "changeme", "secret", "visionq"})
#: Shortest signing secret accepted: 32 characters, 256 bits of a random token.
MIN_SECRET_LENGTH = 32


class BuiltinRuntime(StrEnum):
    ONNX = "onnx"
    TORCH = "torch"


class WorkerPool(StrEnum):
    AUTO = "auto"
    PREFORK = "prefork"
    SOLO = "solo"
    THREADS = "threads"


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "visionq"


class Settings(ClientSettings):
    """visionq's configuration. Every field is `VISIONQ_<NAME>` in the environment; the client's own (`url`,
    `api_key`, `token`) come first."""

    # --- connections -------------------------------------------------------------------------
    redis_url: str | None = None
    """Redis that holds job state (and, unless `broker_url` says otherwise, the Celery broker): `redis://`,
    `rediss://` or a Unix socket, `unix:///path/redis.sock?db=0`. `visionq api` and `visionq worker` default to
    `redis://127.0.0.1:6379/0`; `visionq serve` starts an embedded Redis server when unset, on a Unix socket in
    `data_dir` that only its user may open (the URL is in its log). With `redis_sentinels`, only its database
    number (and password) count: the sentinels name the server."""

    broker_url: str | None = None
    """The Celery broker: `redis://`, `unix://`, `sentinel://` (with `redis_sentinel_master`) or `amqp://`
    (RabbitMQ). Default: the job-state Redis (with `redis_sentinels`, the master they name). On the job-state Redis,
    a job's record and its queue message are written in one step; on a broker apart, through an outbox
    (jobs/publisher.py), at one more round trip per job."""

    redis_sentinels: str | None = None
    """`host:port,host:port,…`: Redis Sentinels that watch the job-state Redis (and the broker's). API processes and
    workers ask them for the master and follow a failover by themselves. Needs `redis_sentinel_master`."""

    redis_sentinel_master: str | None = None
    """The name the sentinels monitor the master by (`sentinel monitor <name> …`)."""

    redis_cluster: bool = False
    """`redis_url` names one node of a Redis Cluster that holds job state, cut into shards spread over its masters
    (docs/scaling.md). Needs a broker apart (`broker_url`: kombu has no Cluster transport)."""

    redis_min_replicas: Annotated[int | None, Field(ge=0)] = None
    """Replicas that must hold a job's record and queue message before the API answers `202`, and its result before
    a worker acknowledges its message (Redis `WAIT`): a 202, and a result, then survive the loss of the master.
    Unset: 1 once the master has been seen with replicas, else 0. 0 turns the wait off."""

    redis_replica_timeout: Annotated[float, Field(gt=0, le=60)] = 1.0
    """Seconds the API waits for the replicas to confirm a job before it answers 503 `broker_unavailable` (an
    `Idempotency-Key` retry then finds the job rather than making a second)."""

    redis_timeout: Annotated[float, Field(gt=0)] = 5.0
    """Seconds any single Redis command may take before it counts as a broker failure."""

    data_dir: Path = Field(default_factory=_default_data_dir)
    """Where `visionq serve` keeps the embedded Redis server's files, and the SQLite archive by default."""

    database_url: str | None = None
    """The archive of finished jobs (SQLAlchemy URL): SQLite (`sqlite:///path/archive.sqlite3`) or PostgreSQL
    (`postgresql+psycopg://user:password@host/db`). Default: `archive.sqlite3` in `data_dir`, which suits one
    machine; API processes and workers on several machines must share a PostgreSQL database."""

    database_migrate: bool = True
    """Bring the archive's schema up to date when the API, a worker or `visionq serve` starts. Turn it off
    to run `visionq db upgrade` as a separate deployment step instead."""

    image_store: Literal["redis", "directory", "s3"] = "redis"
    """Where uploads wait for their worker: `redis` in the job's own Redis keys (smallest set-ups), `directory`
    a folder (`visionq serve`'s default; a volume shared by API and workers on different machines), `s3`
    S3-compatible object storage (S3, MinIO, GCS interoperability)."""

    image_dir: Path | None = None
    """The folder of `image_store=directory`. Default: `images` in `data_dir`."""

    s3_bucket: str | None = None
    """Bucket of `image_store=s3` (required with it); the service does not create it."""

    s3_prefix: str = "images/"
    """Key prefix of the images in `s3_bucket`, so that a bucket can be shared; the sweeper touches nothing else."""

    s3_endpoint_url: str | None = None
    """Endpoint of an S3-compatible store other than AWS (e.g. `http://minio:9000`), for the images and an `s3://`
    `model_repository`; path-style addressing is used with it. Unset: AWS S3."""

    s3_region: str | None = None
    """Region of `s3_bucket` and of an `s3://` `model_repository`. Unset: boto3's default (`AWS_REGION`,
    `~/.aws/config`)."""

    s3_access_key_id: str | None = None
    """Access key id for `image_store=s3` and an `s3://` `model_repository`, with `s3_secret_access_key`. Unset:
    boto3's default credential chain (`AWS_*` variables, `~/.aws`, an instance or pod role)."""

    s3_secret_access_key: SecretStr | None = None
    """Secret access key that goes with `s3_access_key_id`."""

    # --- API ---------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    """Address the API binds (`visionq serve`, `visionq api`)."""

    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    """Port the API listens on."""

    shutdown_timeout: Annotated[int, Field(gt=0)] = 25
    """Seconds the API waits, on SIGTERM, for the requests in flight before it closes them. It stops accepting
    at once, and closes WebSockets at once with code 1012 (service restart): clients reconnect to another
    replica. Keep it under the orchestrator's grace period (Kubernetes: 30 s)."""

    max_upload_bytes: Annotated[int, Field(gt=0)] = 10 * 1024 * 1024
    """Largest accepted image file, in bytes. Larger uploads are refused with 413 while they stream."""

    max_images_per_request: Annotated[int, Field(ge=1, le=256)] = 32
    """Most `file` parts one `POST /classify` may carry (one job each); more are refused with 422."""

    max_pixels: Annotated[int, Field(gt=0)] = 40_000_000
    """Largest accepted image, in pixels (width × height), checked from the header before decoding."""

    callback_allow_private: bool = False
    """Accept callback URLs in private, loopback and link-local ranges (for callbacks inside your own network)."""

    callback_secret: SecretStr | None = None
    """Key of the `X-Visionq-Signature` HMAC-SHA256 on every callback. Callbacks are off without it (a
    `callback_url` is refused); `visionq serve` makes one in `data_dir` on first start."""

    callback_queue: str = "visionq-callbacks"
    """Celery queue of callback deliveries, served by `visionq worker --callbacks`, so that a slow receiver
    never holds up classification."""

    callback_timeout: Annotated[float, Field(gt=0)] = 10.0
    """Seconds a callback receiver has to answer one delivery attempt."""

    callback_max_attempts: Annotated[int, Field(ge=1)] = 8
    """Delivery attempts per callback before it is given up (non-2xx answers and time-outs are retried)."""

    callback_backoff: Annotated[float, Field(gt=0)] = 2.0
    """Seconds before the first retry of a callback; each next one waits twice as long, up to 5 minutes."""

    callback_concurrency: Annotated[int, Field(ge=1)] = 8
    """Deliveries one callbacks worker makes at once (threads: a delivery mostly waits on the network)."""

    # --- security ----------------------------------------------------------------------------
    auth: AuthMode = AuthMode.OFF
    """`required`: every API request needs an API key (`X-API-Key`) or a JWT access token (`Authorization:
    Bearer`), jobs belong to who submitted them, and `/admin/` needs the admin role. `off` (the local default):
    everything is open and every job belongs to `anonymous`."""

    auth_secret: SecretStr | None = None
    """Signs the JWT access tokens (HS256). Required with `auth=required`: at least 32 characters, e.g.
    `python -c 'import secrets; print(secrets.token_urlsafe(32))'`."""

    auth_issuer: str = "visionq"
    """`iss` of the access tokens; a token from another issuer is refused."""

    auth_audience: str = "visionq-api"
    """`aud` of the access tokens; a token for another audience is refused."""

    access_token_ttl: Annotated[int, Field(ge=30)] = 900
    """Seconds an access token from `POST /auth/token` is valid."""

    refresh_token_ttl: Annotated[int, Field(ge=60)] = 30 * 24 * 3600
    """Seconds a refresh token is valid; each use replaces it with a new one."""

    oidc_issuer: str | None = None
    """OpenID Connect issuer whose bearer tokens (RS256 or ES256 JWTs) are accepted besides the service's own
    keys and tokens, e.g. `https://idp.example.com/realms/main`: exactly the `iss` of its tokens. Its keys are
    read from `<issuer>/.well-known/openid-configuration`. Needs `auth=required` and `oidc_audience`."""

    oidc_audience: str | None = None
    """`aud` the identity provider's tokens must carry for this service (its client id or API identifier);
    a token for another audience is refused. Required with `oidc_issuer`."""

    oidc_role_claim: str = "roles"
    """Claim of the identity provider's tokens that holds the caller's roles: a list (`roles`), a space-separated
    string (`scope`), or a dotted path into nested claims (`realm_access.roles` for Keycloak)."""

    oidc_admin_values: list[str] = Field(default_factory=lambda: ["admin"])
    """Values of `oidc_role_claim` that make the caller an `admin`."""

    oidc_user_values: list[str] = Field(default_factory=list)
    """Values of `oidc_role_claim` that make the caller a `user`. Empty: every valid token of the issuer is at
    least a `user`; otherwise a token with none of these (nor an admin value) is refused with 401."""

    oidc_jwks_ttl: Annotated[int, Field(ge=10)] = 300
    """Seconds the identity provider's signing keys are cached. A token signed by a key not in the cache makes
    the service fetch them again at once (key rotation), at most once every few seconds."""

    oidc_client_id: str | None = None
    """Public client id that `/docs` uses to sign in with the identity provider (authorization code with PKCE).
    Unset: `/docs` still names the provider, and tokens are pasted by hand."""

    rate_limit_user: Annotated[int, Field(ge=0)] = 600
    """Requests per minute for each `user` API key (0: unlimited)."""

    rate_limit_admin: Annotated[int, Field(ge=0)] = 6000
    """Requests per minute for each `admin` API key (0: unlimited)."""

    rate_limit_ip: Annotated[int, Field(ge=0)] = 1200
    """Requests per minute from each client address, whoever they authenticate as (0: unlimited)."""

    trusted_proxies: list[str] = Field(default_factory=list)
    """Addresses or networks (CIDR) of the load balancers in front of the API. Only from these is
    `X-Forwarded-For` believed when deciding a request's client address; from anyone else it is ignored."""

    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed to call the API from a browser (CORS), e.g. `["https://app.example.com"]`. Empty: none
    besides the API's own page."""

    # --- jobs --------------------------------------------------------------------------------
    result_ttl: Annotated[int, Field(gt=0)] = 3600
    """Seconds a finished job's status and result stay in Redis."""

    image_ttl: Annotated[int, Field(gt=0)] = 1800
    """Seconds an uploaded image waits in Redis for a worker. A job still queued when its image
    expires can never run, and is failed by the sweeper."""

    requeue_lost_after: Annotated[float, Field(ge=0)] = 120.0
    """Seconds a live job may go without its Celery message being in the queue or held by a worker before
    the sweeper queues it again (a worker's fetch cut off by a Redis restart, or a failover, can lose the
    message). Checked only for jobs queued at least this long, or processing jobs whose worker has not
    reported for this long; 0: never. Keep it under `stale_job_after`, which gives such a job up."""

    stale_job_after: Annotated[int, Field(gt=0)] = 300
    """Seconds a processing job may go without progress before the sweeper fails it. Must exceed
    `visibility_timeout`, so that a job whose worker died is redelivered before it is given up."""

    max_attempts: Annotated[int, Field(ge=1)] = 3
    """Deliveries of one job (first run, retries of transient faults and redeliveries after a
    worker died) before it is failed for good."""

    max_queued_jobs: Annotated[int, Field(ge=0)] = 10_000
    """Jobs waiting in the queue (all priorities) above which `POST /classify` answers 503 `queue_full` with
    `Retry-After`, instead of letting Redis fill up. 0: no bound. The lowest priority is refused first: `low`
    jobs from 80% of the bound, `normal` 90%, `high` 95%, `urgent` only at the bound."""

    max_redis_memory: Annotated[int, Field(ge=0)] = 0
    """Bytes of Redis memory above which `POST /classify` answers 503 `queue_full` (the same shares per priority
    as `max_queued_jobs`). 0: 90% of Redis's own `maxmemory` when it has one, else no bound."""

    max_batch_items: Annotated[int, Field(ge=1, le=100_000)] = 1000
    """Images one `POST /batches` may hold (parts, or members of its archive)."""

    max_batch_bytes: Annotated[int, Field(ge=1)] = 256 * 1024 * 1024
    """Bytes a batch's archive may hold, and unpack to (a bigger one, or a bomb, is refused with 413)."""

    result_cache: bool = True
    """Reuse a finished result for the same image bytes, model version and options from the same owner: the job
    completes at once with `metadata.cache: "hit"` and no inference runs; an identical submit while the first
    still runs waits for its result instead of running too (single flight). A request opts out with
    `Cache-Control: no-cache`."""

    result_cache_shared: bool = False
    """Let the result cache serve one owner's result to another. Off by default: a hit would tell one owner that
    someone else sent the same image."""

    priority_aging: Annotated[float, Field(ge=0)] = 300.0
    """Seconds a pending job waits at one priority before it is promoted one step (`low` to `normal`, and so on
    up to `urgent`), behind the jobs already waiting there and ahead of later arrivals, so that a steady stream
    of urgent work cannot starve the rest. 0: never promoted."""

    queue_pass_interval: Annotated[float, Field(gt=0)] = 1.0
    """Seconds between the passes (one API process at a time) that expire pending jobs past their `deadline`,
    promote aged ones and, with a broker apart, publish again what stayed in the outbox."""

    outbox_republish_after: Annotated[float, Field(gt=0)] = 10.0
    """With a broker apart from job state (`broker_url`): seconds a job may stay in the outbox, made but its message
    not known to be published (its API died in between, or the broker was away), before the queue keeper publishes
    it again. A copy published twice still runs once."""

    max_queue_wait: Annotated[float, Field(ge=0)] = 0.0
    """Seconds a job may wait in the queue; one that waited longer is failed with `deadline_exceeded` when a
    worker reaches it, instead of running late. A job's own `max_wait` form field may ask for less.
    0: no limit but the image's expiry (`image_ttl`)."""

    poison_after: Annotated[int, Field(ge=0)] = 2
    """Pool processes that may die while decoding or running one job's image (killed, out of memory, crashed
    in native code; as seen by the prefork parent) before the image is taken for poison: the job fails with
    `poison_input` and goes to the dead-letter queue with that evidence, instead of taking down more
    workers. 0: never. (Prefork only: a `threads` or `solo` worker that dies takes its jobs with it, so no one
    image can be blamed; a poison image is then bounded by `max_attempts`.)"""

    job_soft_time_limit: Annotated[float, Field(gt=0)] = 60.0
    """Seconds one attempt at a job may run before it is interrupted and the job fails with
    `time_limit_exceeded` (dead-lettered). A `threads` or `solo` worker stops the job as its next stage begins
    (decoding, the model, the top-k), so a job stuck inside one meets the hard limit instead."""

    job_time_limit: Annotated[float, Field(gt=0)] = 90.0
    """Seconds after which a process stuck in one job (where the soft limit cannot interrupt it, as in native
    code) is ended, and the job fails with `time_limit_exceeded`: a prefork child is killed and replaced; a
    `threads` or `solo` worker exits with status 70 for its supervisor to start again, and the other jobs it held
    come back after `visibility_timeout`."""

    dead_letter_ttl: Annotated[int, Field(gt=0)] = 7 * 24 * 3600
    """Seconds a job that used up its attempts stays in the dead-letter queue, image included, for an admin
    to retry (`POST /admin/dlq/{job_id}/retry`) or purge."""

    # --- models ------------------------------------------------------------------------------
    default_model: str = "efficientnet-lite0"
    """Model that `latest` resolves to: a name (its highest version) or `name@version`."""

    model_dir: Path | None = None
    """Folder of user models, one sub-folder each with a `manifest.toml` (see docs/models.md)."""

    model_repository: str | None = None
    """Model repository that `visionq models push` publishes to and the service follows while it runs: a folder, or
    S3-compatible storage as `s3://bucket/prefix` (with the `s3_*` endpoint, region and credentials), laid out as
    `<name>/<version>/` with the weights, the labels and a `manifest.toml` that gives the weights' `sha256`. It may
    be used beside `model_dir`; a `name@version` in both is an error at start-up (see docs/models.md)."""

    model_repository_poll: Annotated[float, Field(gt=0)] = 30.0
    """Seconds between listings of `model_repository` by each API and worker process, which add the versions
    published since. A request for a `name@version` the catalog lacks lists it at once (at most once a second)."""

    builtin_runtime: BuiltinRuntime = BuiltinRuntime.ONNX
    """How workers run the built-in models: `onnx` (ONNX Runtime, about 4x faster on a CPU), from an export of
    the PyTorch weights that is made once, checked against PyTorch on a fixed sample (top-1 agreement ≥ 99%,
    else PyTorch is used) and cached in `model_cache_dir`; or `torch` (PyTorch itself)."""

    model_cache_dir: Path | None = None
    """Where verified ONNX exports of the built-in models are kept. Unset: `$XDG_CACHE_HOME/visionq`
    (`~/.cache/visionq`), shared by every service on the machine."""

    fallback_model: str | None = None
    """A simpler model (name or `name@version`, same label set) that serves jobs whose model is unavailable
    (its circuit breaker open) when the client allows it. Unset: no fallback; such jobs fail at once."""

    allow_fallback: bool = True
    """Whether a job may be served by `fallback_model` when its own model is unavailable, unless the client's
    `fallback` form field says otherwise."""

    breakers: bool = True
    """Circuit breakers per model. Off: a failing model's jobs are retried and dead-lettered like any other
    fault, and no fallback is ever used."""

    breaker_failures: Annotated[int, Field(ge=1)] = 3
    """Failed jobs in a row that open a model's circuit breaker (a model that fails to load opens it at once)."""

    breaker_cooldown: Annotated[float, Field(gt=0)] = 30.0
    """Seconds an open breaker waits before it lets one job through to probe the model."""

    # --- worker ------------------------------------------------------------------------------
    queue: str = "visionq"
    """Celery queue name; its priority lists are `<queue>`, `<queue>:3`, `<queue>:6`, `<queue>:9`."""

    worker_pool: WorkerPool = WorkerPool.AUTO
    """Celery pool: `threads` (jobs in threads of one process: one model in memory, its calls side by side on a
    CPU and batched on a GPU, no hop from Celery's consumer to a child process), `prefork` (one process per slot:
    a crash or a stuck job costs only its own process, and crashes are counted against the image, see
    `poison_after`), `solo` (one job at a time, run by Celery's consumer itself: no hop to a thread at all) or
    `auto`: `solo` for a worker that runs one job at a time on a Redis broker (one CPU, or a concurrency of 1),
    `threads` otherwise. On RabbitMQ a one-job worker keeps `threads`, so that its consumer still answers the
    broker's heartbeats while a job runs."""

    worker_concurrency: Annotated[int | None, Field(ge=1)] = None
    """Jobs one worker runs at once (processes for `prefork`). Unset: one per CPU the worker may use (its CPU
    affinity, capped by its cgroup's CPU quota rounded up), which measures best on a CPU: decoding in one
    process overlaps inference in another."""

    device: str = Field(default="cpu", pattern=r"^(cpu|cuda(:\d+)?)$")
    """Where workers run inference: `cpu`, `cuda` or `cuda:<index>`. With CUDA use `--pool solo` (or
    threads): CUDA does not survive the fork of a prefork pool."""

    jpeg_draft: bool = True
    """Decode a large JPEG at the reduced DCT scale (1/2, 1/4, 1/8) that still leaves 3 source pixels per model
    input pixel, about three times cheaper for a phone photo; it keeps the full decode's top-1 class on 99.5–99.8%
    of a measured set (docs/models.md, "Draft decoding"). Off: every image is decoded in full."""

    inference_threads: Annotated[int, Field(ge=0)] = 0
    """Intra-op threads of each call of the model. 0: the CPUs the worker may use shared out among the jobs it
    runs at once (1 each with the default one job per CPU), so that calls side by side do not fight over CPUs;
    with batching (`batch_max_size` above 1, the GPU layout) or `solo`, every such CPU, since one call of the
    model runs at a time."""

    batch_max_size: Annotated[int | None, Field(ge=1)] = None
    """Most images in one call of the model when a process runs several jobs at once (`threads` pool): jobs that
    reach inference together share a call (dynamic batching). 1: every job calls the model alone, at once.
    Unset: 8 on a GPU; 1 on a CPU, where single-threaded calls side by side measured faster than batches
    (docs/performance.md)."""

    batch_max_wait: Annotated[float, Field(ge=0, le=1)] = 0.005
    """Seconds the first job of a batch may wait for others of its process that are still preprocessing. A job
    with none on their way never waits."""

    warm_models: list[str] = Field(default_factory=lambda: ["latest"])
    """Models each worker process loads before it takes jobs (`*` for every model in the catalog)."""

    visibility_timeout: Annotated[int, Field(gt=0)] = 60
    """Seconds after which a job taken by a worker that died without acknowledging it is redelivered."""

    heartbeat_interval: Annotated[float, Field(gt=0)] = 5.0
    """Seconds between worker heartbeats; a worker is live while its last one is under 3 intervals old."""

    sweep_interval: Annotated[float, Field(gt=0)] = 10.0
    """Seconds between runs of the stale-job sweeper in each worker."""

    stage_window: Annotated[float, Field(ge=0)] = 0.05
    """Seconds a job's stage must be expected to last (learnt per worker process and model) to be written to
    Redis, and published, as it begins. Shorter stages are written with the job's next write, still each in
    order: a fast job costs one round trip for its stages and completion, not four. 0: write every stage at
    once."""

    image_sweep_interval: Annotated[float, Field(gt=0)] = 60.0
    """Seconds between sweeps of the image store (one worker at a time) for images no job holds any more,
    older than `image_ttl`: what a crash, or a submit whose reply was lost, left behind."""

    archive_interval: Annotated[float, Field(gt=0)] = 1.0
    """Seconds between passes of each worker's archiver, which copies accepted and finished jobs to the archive. It is
    the tick of the worker's housekeeping (`heartbeat_interval` when that is shorter): the breakers of its models and
    the master's replica count are read on it too, ahead of the jobs that need them (a tick over 1 s puts the
    breaker's read back on the jobs' path, at most once a second)."""

    archive_settle: Annotated[float, Field(ge=0)] = 2.0
    """Seconds a job's change waits before it is archived, so that a job which ends that soon after it was
    accepted is read from Redis and written to the archive once, finished, rather than twice. A job shows in
    `GET /jobs` about this much later (plus `archive_interval`)."""

    retry_backoff: Annotated[float, Field(gt=0)] = 1.0
    """First retry delay in seconds for transient faults; it doubles on each retry."""

    # --- logging -----------------------------------------------------------------------------
    log_level: str = "INFO"
    """Log level of every visionq process. At `INFO` a job writes three lines (its upload's and its WebSocket's
    access lines, the worker's `job completed`); `DEBUG` adds Celery's and uvicorn's lines per task and socket,
    Alembic's per plugin and schema check, httpx's per request, and the access lines of answered health probes and
    metrics scrapes."""

    otlp_endpoint: str | None = None
    """OpenTelemetry collector (OTLP over HTTP, e.g. `http://jaeger:4318`). When set, the API and the
    workers send traces there: one trace per job, from the upload to the worker's task and the callback."""

    log_format: LogFormat = LogFormat.TEXT
    """`json`: one JSON object per line (for log collectors), with request id, route, status, duration,
    principal and job id as fields. `text`: for people."""

    @model_validator(mode="after")
    def _check_cuda_pool(self) -> Self:
        if self.device.startswith("cuda") and self.worker_pool is WorkerPool.PREFORK:
            raise ValueError("device=cuda needs worker_pool=solo or threads: CUDA does not survive fork (celery#6036)")
        return self

    @model_validator(mode="after")
    def _check_time_limits(self) -> Self:
        if self.job_time_limit <= self.job_soft_time_limit:
            raise ValueError("job_time_limit must exceed job_soft_time_limit, which is the one a job can handle")
        return self

    @model_validator(mode="after")
    def _check_auth(self) -> Self:
        if self.auth is AuthMode.REQUIRED:
            secret = self.auth_secret.get_secret_value() if self.auth_secret is not None else ""
            if secret.lower() in UNSAFE_SECRETS or len(secret) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"auth=required needs VISIONQ_AUTH_SECRET: a random secret of at least {MIN_SECRET_LENGTH} "
                    "characters, not empty or a placeholder "
                    "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
        return self

    @model_validator(mode="after")
    def _check_oidc(self) -> Self:
        if self.oidc_issuer is None:
            return self
        if self.auth is not AuthMode.REQUIRED:
            raise ValueError("VISIONQ_OIDC_ISSUER needs VISIONQ_AUTH=required: with auth off nobody's token is read")
        if not self.oidc_issuer.startswith(("https://", "http://")):
            raise ValueError(f"VISIONQ_OIDC_ISSUER must be the issuer's URL (https://…), not {self.oidc_issuer!r}")
        if self.oidc_issuer == self.auth_issuer:
            raise ValueError("VISIONQ_OIDC_ISSUER must differ from VISIONQ_AUTH_ISSUER, the `iss` of visionq's tokens")
        if not self.oidc_audience:
            raise ValueError(
                "VISIONQ_OIDC_ISSUER needs VISIONQ_OIDC_AUDIENCE: the `aud` the identity provider puts in tokens "
                "for this service (its client id or API identifier), or tokens made for any other app would pass"
            )
        return self

    @model_validator(mode="after")
    def _check_redis_topology(self) -> Self:
        if self.redis_sentinels is not None:
            if not self.redis_sentinel_master:
                raise ValueError("VISIONQ_REDIS_SENTINELS needs VISIONQ_REDIS_SENTINEL_MASTER: the name they monitor")
            if not self.sentinel_addresses:
                raise ValueError("VISIONQ_REDIS_SENTINELS is empty: host:port,host:port,…")
        if self.redis_cluster:
            if self.redis_sentinels is not None:
                raise ValueError("VISIONQ_REDIS_CLUSTER and VISIONQ_REDIS_SENTINELS: a Cluster fails over by itself")
            if self.broker_url is None or self.broker_url == self.redis_url:
                raise ValueError(
                    "VISIONQ_REDIS_CLUSTER needs a broker apart, VISIONQ_BROKER_URL: amqp:// (RabbitMQ), sentinel:// "
                    "or another Redis, since Celery's Redis transport cannot use a Redis Cluster"
                )
        if self.broker_url is not None:
            scheme = self.broker_url.split("://", 1)[0]
            if scheme not in BROKER_SCHEMES:
                raise ValueError(
                    f"VISIONQ_BROKER_URL {self.broker_url!r}: the broker must be one of "
                    + ", ".join(f"{name}://" for name in sorted(BROKER_SCHEMES))
                )
            if scheme == "sentinel" and not self.redis_sentinel_master:
                raise ValueError("a sentinel:// VISIONQ_BROKER_URL needs VISIONQ_REDIS_SENTINEL_MASTER")
        return self

    @model_validator(mode="after")
    def _check_queues(self) -> Self:
        if self.callback_queue == self.queue:
            raise ValueError(f"callback_queue and queue are both {self.queue!r}: deliveries need a queue of their own")
        return self

    @model_validator(mode="after")
    def _check_timeouts(self) -> Self:
        if self.stale_job_after <= self.visibility_timeout:
            raise ValueError(
                f"stale_job_after ({self.stale_job_after}s) must exceed visibility_timeout "
                f"({self.visibility_timeout}s), or jobs whose worker died are failed before they are redelivered"
            )
        return self

    @model_validator(mode="after")
    def _check_image_store(self) -> Self:
        if self.image_store == "s3" and not self.s3_bucket:
            raise ValueError("image_store=s3 needs VISIONQ_S3_BUCKET: the bucket that uploads wait in")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("set both VISIONQ_S3_ACCESS_KEY_ID and VISIONQ_S3_SECRET_ACCESS_KEY, or neither")
        return self

    @model_validator(mode="after")
    def _check_model_repository(self) -> Self:
        location = self.model_repository
        if location is None:
            return self
        scheme, found, rest = location.partition("://")
        if found and scheme != "s3":
            raise ValueError(
                f"VISIONQ_MODEL_REPOSITORY must be a folder or s3://bucket/prefix, not a {scheme}:// URL: {location!r}"
            )
        if found and not rest.split("/", 1)[0]:
            raise ValueError(f"VISIONQ_MODEL_REPOSITORY {location!r} names no bucket: s3://bucket/prefix")
        if not location.strip():
            raise ValueError("VISIONQ_MODEL_REPOSITORY is empty: a folder, or s3://bucket/prefix")
        return self

    @property
    def state_url(self) -> str:
        """The job-state Redis URL (with sentinels, for its database number and password)."""
        return self.redis_url or DEFAULT_REDIS_URL

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """`redis_sentinels` as (host, port) pairs; empty without sentinels."""
        return [_address(item) for item in (self.redis_sentinels or "").split(",") if item.strip()]

    @property
    def broker(self) -> str:
        """The Celery broker URL: `broker_url`, else the job-state Redis (`sentinel://…` with sentinels)."""
        return kombu_url(self.broker_url) if self.broker_url else self._state_broker

    @property
    def broker_apart(self) -> bool:
        """Whether the broker is another server than job state: then messages go through the outbox."""
        return self.broker != self._state_broker

    @property
    def _state_broker(self) -> str:
        """The job-state Redis as a Celery broker URL."""
        if self.redis_sentinels:
            database = urlsplit(self.state_url).path.strip("/") or "0"
            return ";".join(f"sentinel://{host}:{port}/{database}" for host, port in self.sentinel_addresses)
        return kombu_url(self.state_url)

    @property
    def concurrency(self) -> int:
        """`worker_concurrency`, or one per CPU this process may use (its affinity and cgroup CPU quota, not
        the node's count: a container limited to 2 CPUs on a 64-core node gets 2)."""
        return self.worker_concurrency or available_cpus()

    @property
    def pool(self) -> WorkerPool:
        """The pool the worker runs: `worker_pool`, with `auto` resolved (see there). A job handed from Celery's
        consumer to a thread costs a thread switch each way (about a millisecond of pickup on an idle machine);
        with one job at a time there is nothing to run beside it."""
        if self.worker_pool is not WorkerPool.AUTO:
            return self.worker_pool
        alone = self.concurrency == 1 and not self.broker.startswith("amqp")
        return WorkerPool.SOLO if alone else WorkerPool.THREADS

    @property
    def batch_size(self) -> int:
        """`batch_max_size`, or its default for the device (see there)."""
        if self.batch_max_size is not None:
            return self.batch_max_size
        return 1 if self.device == "cpu" else 8

    @property
    def threads_per_job(self) -> int:
        """`inference_threads`, or the CPUs this process may use shared out among the jobs that call the model side
        by side (prefork's processes, or a `threads` worker's unbatched jobs); all of them where one call runs at a
        time (`solo`, or a batching `threads` worker)."""
        if self.inference_threads:
            return self.inference_threads
        cpus = available_cpus()
        side_by_side = self.pool is WorkerPool.PREFORK or (self.pool is WorkerPool.THREADS and self.batch_size == 1)
        return max(1, cpus // self.concurrency) if side_by_side else cpus

    @property
    def model_cache(self) -> Path:
        if self.model_cache_dir is not None:
            return self.model_cache_dir
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "visionq"

    @property
    def archive_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / ARCHIVE_FILE}"

    @property
    def images_path(self) -> Path:
        return self.image_dir or self.data_dir / IMAGES_DIR


def get_settings(**overrides: object) -> Settings:
    """Build settings from the environment, `.env` and explicit overrides (for entry points and tests)."""
    return Settings(**overrides)  # type: ignore[arg-type]


def _address(item: str) -> tuple[str, int]:
    """`host:port` (a sentinel's address) as a pair; the port defaults to Sentinel's 26379."""
    host, _, port = item.strip().rpartition(":")
    if not host:
        return item.strip(), 26379
    if not port.isdigit():
        raise ValueError(f"VISIONQ_REDIS_SENTINELS: {item.strip()!r} is not host:port")
    return host.strip("[]"), int(port)


def kombu_url(url: str) -> str:
    """A job-state Redis URL as kombu names the same server: redis-py's `unix:///path?db=N` (a Unix socket) is
    kombu's `redis+socket:///path?virtual_host=N`; every other URL is the same for both."""
    parts = urlsplit(url)
    if parts.scheme != "unix":
        return url
    query = parse_qs(parts.query)
    database = query.pop("db", ["0"])[0]
    rest = urlencode({name: values[0] for name, values in query.items()})
    return f"redis+socket://{parts.netloc}{parts.path}?virtual_host={database}" + (f"&{rest}" if rest else "")
