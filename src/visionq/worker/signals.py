"""Celery signal handlers that set up and tear down each worker process."""

from __future__ import annotations

from typing import Any

from celery import signals

from visionq.settings import WorkerPool
from visionq.telemetry import start_tracing, stop_tracing
from visionq.worker import context, deliveries
from visionq.worker.celery_app import CALLBACKS, VisionqCelery


def _setup(app: VisionqCelery) -> None:
    start_tracing(app.settings, "visionq-worker")
    ctx = context.WorkerContext(app.settings)
    context.install(ctx)
    ctx.start()


@signals.worker_process_init.connect
def _on_child_start(**_: Any) -> None:
    # Prefork children load models after the fork: runtimes' thread pools do not survive fork.
    from celery import current_app

    _setup(current_app)  # type: ignore[arg-type]


@signals.worker_process_shutdown.connect
def _on_child_stop(**_: Any) -> None:
    context.current().stop()
    stop_tracing()


@signals.worker_init.connect
def _on_worker_init(sender: Any, **_: Any) -> None:
    app: VisionqCelery = sender.app
    if app.role == CALLBACKS:
        start_tracing(app.settings, "visionq-callbacks")
        worker = deliveries.DeliveryWorker(app.settings, app)
        deliveries.install(worker)
        worker.start()
    elif app.settings.worker_pool is not WorkerPool.PREFORK:
        # Without child processes, the main process runs the jobs, so it sets up before consuming.
        _setup(app)


@signals.worker_shutdown.connect
def _on_worker_stop(sender: Any, **_: Any) -> None:
    if sender.app.role == CALLBACKS:
        deliveries.current().stop()
    elif sender.app.settings.worker_pool is not WorkerPool.PREFORK:
        context.current().stop()
    stop_tracing()
