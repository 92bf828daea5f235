"""create_app(settings): the FastAPI application with its lifespan, routes and error handlers."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.concurrency import run_in_threadpool

from visionq import __version__
from visionq.api import problems
from visionq.api.backpressure import Backpressure
from visionq.api.endpoints import admin, auth, batches, catalog, classification, health, jobs, status
from visionq.api.middleware import RequestMiddleware
from visionq.api.queue_keeper import QueueKeeper
from visionq.api.ratelimit import RateLimiter
from visionq.api.security import Authenticator
from visionq.api.state import AppState
from visionq.api.submission import Submitter
from visionq.archive import schema
from visionq.archive.repository import Archive
from visionq.auth.oidc import discovery_url
from visionq.cancelling import cancel
from visionq.connections import async_redis, broker_publisher, shards
from visionq.images import create_image_store
from visionq.inference.sources import ModelSources
from visionq.jobs.batches import BatchStore
from visionq.jobs.events import JobEvents
from visionq.jobs.model_requests import LatestChoice
from visionq.jobs.replication import Replication
from visionq.jobs.store import JobStore
from visionq.metrics import Metrics
from visionq.settings import Settings
from visionq.telemetry import start_tracing

#: Name of the identity provider's security scheme in the OpenAPI document (with `oidc_issuer` set).
OIDC_SCHEME = "openIdConnect"
#: Seconds the app waits at start-up for its job-event subscription before serving anyway.
SUBSCRIBE_TIMEOUT = 2.0

DESCRIPTION = """Asynchronous image classification. Upload an image to `POST /classify`, get a job id at once,
then follow it with `GET /status/{id}` or the WebSocket `/ws/{id}` and fetch `GET /result/{id}`.
Every error is RFC 9457 problem details (`application/problem+json`) with a stable `code`."""


#: Seconds uvicorn keeps an idle HTTP connection open: longer than the proxies in front of it keep theirs.
KEEP_ALIVE_SECONDS = 75


def server_config(settings: Settings, *, port: int | None = None) -> uvicorn.Config:
    """How uvicorn serves the app: our own access log and logging set-up, sans-I/O WebSockets."""
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port if port is None else port,
        log_config=None,
        access_log=False,
        ws="websockets-sansio",
        # Status messages are a few hundred bytes: compressing each costs more CPU than it saves.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=settings.shutdown_timeout,
        # An idle keep-alive connection outlives the proxy's (nginx's upstream keepalive_timeout, a cloud load
        # balancer's idle timeout: 60 s): closed first by the API, it could take a request the proxy had just sent
        # on it, and a streamed POST /classify cannot be passed on to another replica (a 502).
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        # X-Forwarded-For is read by the rate limiter, from VISIONQ_TRUSTED_PROXIES only; uvicorn would
        # otherwise believe it from any local peer.
        proxy_headers=False,
    )


def create_app(settings: Settings) -> FastAPI:
    tracing = start_tracing(settings, "visionq-api")
    metrics = Metrics()
    sources = ModelSources(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        archive = Archive(settings.archive_url)
        if settings.database_migrate:
            await run_in_threadpool(schema.upgrade, archive.engine)
        redis = async_redis(settings)
        events = JobEvents(redis)
        replication = Replication(redis, required=settings.redis_min_replicas, timeout=settings.redis_replica_timeout)
        publisher = broker_publisher(settings)
        store = JobStore(
            redis,
            result_ttl=settings.result_ttl,
            image_ttl=settings.image_ttl,
            queue=settings.queue,
            replication=replication,
            publisher=publisher,
            shards=shards(settings),
        )
        images = create_image_store(settings)
        latest = LatestChoice(redis)
        backpressure = Backpressure(settings, store)
        authenticator = Authenticator(settings, redis, archive)
        app.state.visionq = AppState(
            settings=settings,
            redis=redis,
            store=store,
            events=events,
            catalog=sources.catalog,
            sources=sources,
            images=images,
            submitter=Submitter(
                settings, store=store, images=images, sources=sources, latest=latest, backpressure=backpressure
            ),
            metrics=metrics,
            archive=archive,
            auth=authenticator,
            rate_limiter=RateLimiter(settings, redis),
            backpressure=backpressure,
            latest=latest,
            batches=BatchStore(
                redis, ttl=settings.image_ttl + settings.result_ttl, queue=settings.queue, shards=store.shards
            ),
        )
        await events.start()
        await events.wait_subscribed(SUBSCRIBE_TIMEOUT)
        sources.start()  # lists the model repository in a thread of its own, never in the event loop
        keeper = asyncio.create_task(QueueKeeper(settings, store, images).run())
        # What start-up made lives as long as the process: out of the collector's sight, a full collection no
        # longer walks its ~200,000 objects (a pause of ~0.25 s of a loaded core, about once a minute at 40 jobs/s).
        gc.freeze()
        try:
            yield
        finally:
            await cancel(keeper)
            await latest.aclose()
            await replication.aclose()
            await backpressure.aclose()
            await run_in_threadpool(sources.stop)
            await events.stop()
            await authenticator.aclose()
            await store.aclose()
            await redis.aclose()
            if publisher is not None:
                await run_in_threadpool(publisher.close)
            archive.close()

    sign_in = {"clientId": settings.oidc_client_id, "usePkceWithAuthorizationCodeGrant": True}
    app = FastAPI(
        title="visionq",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        swagger_ui_init_oauth=sign_in if settings.oidc_client_id is not None else None,
    )
    if settings.oidc_issuer is not None:
        _offer_identity_provider(app, settings.oidc_issuer)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Idempotency-Key",
                "X-Request-ID",
                "Content-Type",
                "Prefer",
                "Cache-Control",
            ],
            expose_headers=[
                "Location",
                "Retry-After",
                "X-Request-ID",
                "Idempotent-Replayed",
                "Preference-Applied",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
            max_age=600,
        )
    problems.install_problem_handlers(app)
    routers = (
        classification.router,
        batches.router,
        status.router,
        jobs.router,
        catalog.router,
        auth.router,
        admin.router,
    )
    for router in (*routers, health.router):
        app.include_router(router)

    # The page at `/` and its assets under `/web/`: no catch-all, so that every other path gets the router's
    # own 404 or 405 (GET /classify is a 405 that names POST).
    web = resources.files("visionq") / "web"

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(web / "index.html"))

    app.mount("/web", StaticFiles(directory=str(web)), name="web")

    app.add_middleware(RequestMiddleware, metrics=metrics)
    if tracing is not None:
        FastAPIInstrumentor.instrument_app(app, tracer_provider=tracing, excluded_urls="health,metrics")
    return app


def _offer_identity_provider(app: FastAPI, issuer: str) -> None:
    """Name the identity provider in the OpenAPI document (an `openIdConnect` scheme that every route accepts),
    so that /docs can sign in with it and send its token."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()  # cached by FastAPI as app.openapi_schema, so the scheme is added once
        schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes[OIDC_SCHEME] = {"type": "openIdConnect", "openIdConnectUrl": discovery_url(issuer)}
        document["security"] = [{OIDC_SCHEME: []}]
        return document

    app.openapi = openapi  # type: ignore[method-assign]
