"""GET /health (liveness), GET /health/ready (readiness) and GET /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from visionq.api.dependencies import StateDep
from visionq.api.endpoints.catalog import worker_models
from visionq.api.problems import RETRY_AFTER_HEADER, UNREACHABLE_RETRY_AFTER, problem_responses
from visionq.api.state import AppState
from visionq.jobs.breakers import BreakerState, breaker_states
from visionq.jobs.publisher import Publisher
from visionq.jobs.snapshot import read_cluster
from visionq.wire.schemas import CheckState, Liveness, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Liveness)
async def liveness() -> Liveness:
    """Answers while the process serves."""
    return Liveness()


@router.get(
    "/health/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "headers": {"Retry-After": RETRY_AFTER_HEADER}}},
)
async def readiness(state: StateDep) -> JSONResponse:
    """Whether this process can take jobs now (503 when Redis is unreachable)."""
    try:
        await state.store.ping()
        report = await worker_models(state)
        workers, loaded = report.workers, set(report.loaded_by)
    except (RedisError, OSError):
        body = Readiness(
            status=CheckState.DOWN,
            checks={"redis": "down", "workers": "unknown", "models": "unknown", "database": await _database(state)},
        )
        return JSONResponse(
            body.model_dump(mode="json"), status_code=503, headers={"Retry-After": str(UNREACHABLE_RETRY_AFTER)}
        )
    default = state.catalog.resolve("latest", latest=await state.latest.get()).ref
    breakers = await breaker_states(state.redis)
    models_ok = default in loaded and default not in breakers
    database = await _database(state)
    checks: dict[str, str | int | dict[str, object]] = {
        "redis": "ok",
        "workers": workers,
        "models": "ok" if models_ok else _model_problem(default, loaded, breakers),
        "database": database,
    }
    if state.store.publisher is not None:
        checks["broker"] = await _broker(state.store.publisher)
    # Jobs flow without the archive (it catches up later), and wait in the outbox while a broker apart is away:
    # either outage degrades, never stops.
    healthy = workers and models_ok and database == "ok" and checks.get("broker", "ok") == "ok"
    body = Readiness(status=CheckState.OK if healthy else CheckState.DEGRADED, checks=checks)
    return JSONResponse(body.model_dump(mode="json"))


def _model_problem(default: str, loaded: set[str], breakers: dict[str, tuple[BreakerState, str]]) -> str:
    if default in breakers:
        breaker, reason = breakers[default]
        return f"{default} unavailable, breaker {breaker.value}: {reason}"
    return f"{default} not loaded by any worker"


async def _broker(publisher: Publisher) -> str:
    try:
        await run_in_threadpool(publisher.ping)
    except Exception:  # kombu raises each transport's own errors
        return "down"
    return "ok"


async def _database(state: AppState) -> str:
    try:
        await run_in_threadpool(state.archive.ping)
    except SQLAlchemyError:
        return "down"
    return "ok"


@router.get("/metrics", response_class=Response, responses=problem_responses())
async def metrics(state: StateDep) -> Response:
    """Prometheus text format: this process's requests and the cluster's jobs and workers."""
    snapshot = await read_cluster(state.redis, state.settings.queue, state.store.shards)
    return Response(state.metrics.render(snapshot), media_type=CONTENT_TYPE_LATEST)
