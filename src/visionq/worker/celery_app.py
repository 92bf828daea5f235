"""The Celery application, built from settings (`create_celery_app`).

The workers run its tasks; the API never imports it (it writes the classification task's message itself,
`jobs/queue.py`). Every choice below
serves one promise, that an accepted job is neither lost nor run late behind lower priorities.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, bootsteps

from visionq.jobs.publisher import REDIS_OPTIONS, broker_queue, is_amqp
from visionq.jobs.queue import CLASSIFY_TASK
from visionq.settings import Settings
from visionq.worker.broker import SENTINEL_TRANSPORT, TRANSPORT, broker_url

__all__ = ["CALLBACKS", "CLASSIFY_TASK", "VisionqCelery", "create_celery_app"]

#: The role of a worker that delivers callbacks instead of classifying.
CALLBACKS = "callbacks"
#: Longest pause between kombu's scans for unacknowledged messages of dead workers.
MAX_RESTORE_INTERVAL = 10


class VisionqCelery(Celery):
    """A Celery app that carries the settings it was built from, for the worker's signal handlers."""

    settings: Settings
    #: `classify` (jobs, on `settings.queue`) or `callbacks` (deliveries, on `settings.callback_queue`).
    role: str = "classify"


#: Seconds a prefork child may take to set up (load and warm its models) before Celery gives it up.
PROCESS_START_TIMEOUT = 120.0
#: Seconds at most between a shutdown being asked and the worker's event loop seeing it.
WAKE_INTERVAL = 1.0


class PromptShutdown(bootsteps.StartStopStep):
    """A timer on the worker's event loop that fires every WAKE_INTERVAL: kombu's loop sleeps until its next timer,
    up to 10 s, and sees a shutdown asked meanwhile only then (a callbacks worker on RabbitMQ, with no nearer timer,
    took 10 s to stop)."""

    requires = ("celery.worker.components:Hub",)

    def start(self, worker: Any) -> None:
        if worker.hub is not None:
            worker.hub.call_repeatedly(WAKE_INTERVAL, _nothing)


def _nothing() -> None:
    """The wake-up itself: the loop checks for a shutdown after each timer."""


def create_celery_app(settings: Settings) -> VisionqCelery:
    app = VisionqCelery("visionq", broker=broker_url(settings.broker), include=["visionq.worker.tasks"])
    app.settings = settings
    app.steps["worker"].add(PromptShutdown)
    app.conf.update(
        task_default_queue=settings.queue,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # Job state lives in our own Redis keys; Celery's result backend would duplicate it.
        result_backend=None,
        # acks_late + reject_on_worker_lost: a message is acknowledged only once its job is finished,
        # so a worker killed mid-job leaves it to be redelivered rather than lost.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Prefetch 1: a busy worker holds no queued message, so a later urgent job is not stuck
        # behind low ones already reserved by this worker.
        worker_prefetch_multiplier=1,
        # A job stuck past the soft limit gets SoftTimeLimitExceeded; past the hard one its process is killed
        # and replaced (prefork; `watchdog.py` in the other pools). Both fail the job with `time_limit_exceeded`.
        task_soft_time_limit=settings.job_soft_time_limit,
        task_time_limit=settings.job_time_limit,
        # A prefork child loads and warms its models before it reports up (runtimes do not survive fork), which
        # takes seconds for a large model, a GPU's start or a loaded machine: past Celery's default 4 s the child
        # was killed and forked again, over and over.
        worker_proc_alive_timeout=PROCESS_START_TIMEOUT,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
    )
    if is_amqp(settings.broker):
        _on_rabbitmq(app, settings)
    else:
        _on_redis(app, settings)
    return app


def _on_rabbitmq(app: Celery, settings: Settings) -> None:
    app.conf.update(
        # Declared as the API's publisher declares them (jobs/publisher.py), priorities included.
        task_queues=[broker_queue(name, settings.broker) for name in (settings.queue, settings.callback_queue)],
        # A message is in RabbitMQ once a publish returns (a retry's, a callback's).
        broker_transport_options={"confirm_publish": True},
    )


def _on_redis(app: Celery, settings: Settings) -> None:
    app.conf.update(
        # kombu's Redis transport, but for a reconnection fault that made a Redis restart stop a worker.
        broker_transport=SENTINEL_TRANSPORT if settings.broker.startswith("sentinel://") else TRANSPORT,
        broker_transport_options={
            # One Redis list per step; BRPOP lists them in ascending order, so step 0 is always served first.
            **REDIS_OPTIONS,
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_interval": min(MAX_RESTORE_INTERVAL, settings.visibility_timeout),
            "unacked_restore_throttle": 1,
            # The lock one consumer holds while it puts back other workers' unacknowledged messages. A worker
            # SIGKILLed while holding it would stop every worker's redeliveries for kombu's default 5 minutes;
            # a pass takes milliseconds, and two at once only queue a harmless second message.
            "unacked_mutex_expire": settings.visibility_timeout,
            "socket_timeout": settings.redis_timeout,
            "socket_connect_timeout": settings.redis_timeout,
            **({"master_name": settings.redis_sentinel_master} if settings.redis_sentinel_master else {}),
        },
    )
