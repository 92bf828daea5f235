"""Celery signal handlers that set up and tear down each worker process."""

from __future__ import annotations

from typing import Any

from celery import signals
from celery.exceptions import TimeLimitExceeded

from visionq.settings import WorkerPool
from visionq.telemetry import start_tracing, stop_tracing
from visionq.worker import context, deliveries
from visionq.worker.celery_app import CALLBACKS, CLASSIFY_TASK, VisionqCelery


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


@signals.task_failure.connect
def _on_task_failure(sender: Any, task_id: str, exception: BaseException, args: Any, **_: Any) -> None:
    # Sent by the main process when it killed a pool process stuck past the hard time limit. The message
    # is acknowledged, so the job must be finished here or it would wait for the sweeper.
    if isinstance(exception, TimeLimitExceeded) and sender.name == CLASSIFY_TASK and args:
        from visionq.worker.tasks import fail_over_time

        fail_over_time(sender.app.settings, str(args[0]))
