"""Celery signal handlers that set up and tear down each worker process."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

from celery import signals

from visionq.settings import WorkerPool
from visionq.telemetry import start_tracing, stop_tracing
from visionq.worker import context, deliveries
from visionq.worker.celery_app import CALLBACKS, VisionqCelery

log = logging.getLogger(__name__)


def _setup(app: VisionqCelery) -> None:
    start_tracing(app.settings, "visionq-worker")
    ctx = context.WorkerContext(app.settings)
    context.install(ctx)
    ctx.start()


def _or_exit(set_up: Callable[[], None]) -> None:
    """Set the process up, or exit it. Celery logs what a signal handler raises and goes on, and a process that
    could not set up (Redis or the archive unreachable) would take jobs it cannot run, and lose them; exiting
    lets its supervisor start it again. (A prefork pool starts a failed child again itself.)"""
    try:
        set_up()
    except Exception:
        log.critical("the worker process could not set up, and exits", exc_info=True)
        raise SystemExit(1) from None


@signals.worker_process_init.connect
def _on_child_start(**_: Any) -> None:
    from celery import current_app

    # The solo pool sends this signal too, in the main process, which `worker_init` has set up already: a second
    # set-up there ran beside the first (two housekeeping threads, the models loaded twice, an archiver that did
    # not know the jobs' results and read each back from Redis).
    if current_app.settings.pool is not WorkerPool.PREFORK:  # type: ignore[attr-defined]
        return
    # Prefork children load models after the fork: runtimes' thread pools do not survive fork.
    _or_exit(lambda: _setup(current_app))  # type: ignore[arg-type]
    gc.freeze()  # see _on_worker_ready


@signals.worker_ready.connect
def _on_worker_ready(sender: Any, **_: Any) -> None:
    worker = sender.controller  # the consumer's WorkController
    log.info(
        "%s ready: queue %s, %s pool of %d, broker %s",
        worker.hostname,
        ", ".join(sorted(sender.app.amqp.queues.consume_from)),
        worker.pool_cls.__module__.rsplit(".", 1)[-1],
        worker.concurrency,
        sender.connection.as_uri(),  # without its password
    )
    # What start-up made (modules, the models, the app) lives as long as the process: out of the collector's
    # sight, a full collection does not walk it again (one took ~0.25 s of a loaded core in the API).
    gc.freeze()


@signals.worker_process_shutdown.connect
def _on_child_stop(**_: Any) -> None:
    context.current().stop()
    stop_tracing()


@signals.worker_init.connect
def _on_worker_init(sender: Any, **_: Any) -> None:
    app: VisionqCelery = sender.app
    if app.role == CALLBACKS:
        _or_exit(lambda: _setup_callbacks(app))
    elif app.settings.pool is not WorkerPool.PREFORK:
        # Without child processes, the main process runs the jobs, so it sets up before consuming.
        _or_exit(lambda: _setup(app))


def _setup_callbacks(app: VisionqCelery) -> None:
    start_tracing(app.settings, "visionq-callbacks")
    worker = deliveries.DeliveryWorker(app.settings, app)
    deliveries.install(worker)
    worker.start()


@signals.worker_shutdown.connect
def _on_worker_stop(sender: Any, **_: Any) -> None:
    if sender.app.role == CALLBACKS:
        deliveries.current().stop()
    elif sender.app.settings.pool is not WorkerPool.PREFORK:
        context.current().stop()
    stop_tracing()
