"""Job lifecycle vocabulary: statuses, stages, priorities, and which changes are allowed."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    """Its deadline passed before any worker started it: never run."""

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED})


class Stage(StrEnum):
    """Where a job is, with the progress each stage starts at (HLD §3.2.1)."""

    QUEUED = "queued"
    INITIALIZING = "initializing"
    PREPROCESSING = "preprocessing"
    INFERENCE = "inference"
    POSTPROCESSING = "postprocessing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def progress(self) -> int:
        """Progress a job has reached when it enters this stage. A job that fails, is cancelled or expires
        keeps the progress it had, so those stages have none of their own."""
        return STAGE_PROGRESS[self]


STAGE_PROGRESS: dict[Stage, int] = {
    Stage.QUEUED: 0,
    Stage.INITIALIZING: 0,
    Stage.PREPROCESSING: 25,
    Stage.INFERENCE: 50,
    Stage.POSTPROCESSING: 75,
    Stage.COMPLETED: 100,
}

#: The stages a worker reports, in order; a job never moves backwards through them.
WORKER_STAGES = (Stage.INITIALIZING, Stage.PREPROCESSING, Stage.INFERENCE, Stage.POSTPROCESSING)


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"

    @property
    def broker_priority(self) -> int:
        """Celery's Redis transport keeps one list per priority step and pops them in ascending
        order (BRPOP over `queue`, `queue:3`, `queue:6`, `queue:9`), so 0 is served first."""
        return BROKER_PRIORITY[self]

    @property
    def raised(self) -> Priority:
        """The next priority up (`urgent` stays `urgent`): where an aged job is promoted to."""
        return PRIORITY_ORDER[max(PRIORITY_ORDER.index(self) - 1, 0)]

    @property
    def shed_share(self) -> float:
        """The share of the queue's bound that jobs of this priority may fill: under load the lowest priority
        is refused first, and `urgent` only when the queue is full."""
        return SHED_SHARE[self]


BROKER_PRIORITY: dict[Priority, int] = {Priority.URGENT: 0, Priority.HIGH: 3, Priority.NORMAL: 6, Priority.LOW: 9}
PRIORITY_STEPS = sorted(BROKER_PRIORITY.values())
#: Highest first, the order workers serve them in.
PRIORITY_ORDER = sorted(Priority, key=lambda priority: BROKER_PRIORITY[priority])
SHED_SHARE: dict[Priority, float] = {Priority.URGENT: 1.0, Priority.HIGH: 0.95, Priority.NORMAL: 0.9, Priority.LOW: 0.8}


class Role(StrEnum):
    """What a principal may do: its own jobs (`user`), or everything (`admin`)."""

    USER = "user"
    ADMIN = "admin"
