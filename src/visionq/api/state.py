"""What one API process shares between requests, built in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from visionq.api.backpressure import Backpressure
from visionq.api.ratelimit import RateLimiter
from visionq.api.security import Authenticator
from visionq.api.submission import Submitter
from visionq.archive.repository import Archive
from visionq.images import ImageStore
from visionq.inference.catalog import Catalog
from visionq.inference.sources import ModelSources
from visionq.jobs.batches import BatchStore
from visionq.jobs.events import JobEvents
from visionq.jobs.model_requests import LatestChoice
from visionq.jobs.store import JobStore
from visionq.metrics import Metrics
from visionq.settings import Settings


@dataclass
class AppState:
    settings: Settings
    redis: Redis
    store: JobStore
    events: JobEvents
    catalog: Catalog
    sources: ModelSources
    images: ImageStore | None
    submitter: Submitter
    metrics: Metrics
    archive: Archive
    auth: Authenticator
    rate_limiter: RateLimiter
    backpressure: Backpressure
    latest: LatestChoice
    batches: BatchStore
