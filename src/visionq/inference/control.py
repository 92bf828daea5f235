"""A worker process's side of what admins ask of the models (jobs/model_requests.py keeps the asks in Redis):
which models to keep loaded, and which to drop. Read on the housekeeping tick (`ModelControl.apply`).

An unload is a request, numbered per model: each worker drops the model once per new number, and a worker
that starts later does not replay the requests made before it (numbers, not clocks, so that machines whose
clocks disagree still agree).
"""

from __future__ import annotations

import logging

from redis import Redis

from visionq.inference.catalog import Catalog
from visionq.inference.registry import ModelRegistry
from visionq.jobs import model_requests

log = logging.getLogger(__name__)


class ModelControl:
    """One worker process's side: bring its registry in line with what admins asked."""

    def __init__(self, redis: Redis, catalog: Catalog, registry: ModelRegistry) -> None:
        self.redis = redis
        self.catalog = catalog
        self.registry = registry
        self._unloads_seen: dict[str, int] | None = None

    def apply(self) -> None:
        wanted, unloads = model_requests.read(self.redis)
        seen, self._unloads_seen = self._unloads_seen, unloads
        if seen is not None:  # on the first pass, only learn where the numbers stand
            for ref, number in unloads.items():
                if number > seen.get(ref, 0) and self.registry.unload(ref):
                    log.info("model unloaded on request", extra={"model_version": ref})
        for ref in sorted(wanted):
            if ref in self.catalog.refs() and ref not in self.registry.loaded():
                try:
                    self.registry.get(self.catalog.resolve(ref))
                except Exception:  # a model that cannot load must not stop the worker's housekeeping
                    log.exception("model %s could not be loaded on request", ref)
                else:
                    log.info("model loaded on request", extra={"model_version": ref})
