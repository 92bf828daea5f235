"""Live progress bars: one per job, moved by the status updates the SDK reports while it follows the job."""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TaskID, TextColumn, TimeElapsedColumn

from visionq.client.errors import ProblemError
from visionq.wire.jobs import StatusBody
from visionq.wire.schemas import BatchStatus
from visionq.wire.states import JobStatus

_STAGE_STYLE = {
    JobStatus.COMPLETED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "yellow",
    JobStatus.EXPIRED: "yellow",
}


class _Live:
    """A rich Progress drawn while the `with` block runs (nothing at all when not `visible`)."""

    def __init__(self, console: Console, *columns: ProgressColumn | str, visible: bool = True) -> None:
        self._progress = Progress(*columns, TimeElapsedColumn(), console=console, disable=not visible)

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()


class JobBars(_Live):
    """A rich Progress with a bar per job, labelled by file name or job id, showing its stage.

    Updates may come from any thread or task: rich's Progress is thread-safe. A JobBars made with
    `visible=False` (for `--json`) draws nothing.
    """

    def __init__(self, console: Console, *, visible: bool = True) -> None:
        super().__init__(
            console,
            TextColumn("{task.description}", style="bold"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[stage]}"),
            visible=visible,
        )

    def add(self, label: str) -> TaskID:
        return self._progress.add_task(label, total=100, stage="submitting")

    def accept(self, bar: TaskID) -> None:
        self._progress.update(bar, stage="queued")

    def show(self, bar: TaskID, status: StatusBody) -> None:
        style = _STAGE_STYLE.get(status.status)
        stage = f"[{style}]{status.stage.value}[/]" if style else status.stage.value
        self._progress.update(bar, completed=status.progress, stage=stage)
        if status.status.terminal:
            self._progress.stop_task(bar)

    def follow(self, bar: TaskID) -> Callable[[StatusBody], None]:
        """The `on_status` callback that moves `bar`."""
        return functools.partial(self.show, bar)

    def refuse(self, bar: TaskID, problem: ProblemError) -> None:
        self._progress.update(bar, stage=f"[red]refused: {problem.code}[/]")
        self._progress.stop_task(bar)

    def give_up(self, bar: TaskID, reason: str) -> None:
        self._progress.update(bar, stage=f"[red]{reason}[/]")
        self._progress.stop_task(bar)


class BatchBar(_Live):
    """One bar for a whole batch: its items ended out of its total, and its counts so far."""

    def __init__(self, console: Console, *, visible: bool = True) -> None:
        super().__init__(
            console,
            TextColumn("batch", style="bold"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f}"),
            TextColumn("{task.fields[counts]}"),
            visible=visible,
        )
        self._task: TaskID | None = None

    def start(self, total: int) -> None:
        self._task = self._progress.add_task("batch", total=total, counts="queued")

    def show(self, status: BatchStatus) -> None:
        if self._task is None:
            return
        counts = status.counts
        ended = status.total - counts.pending - counts.processing
        parts = [f"{counts.completed} done"]
        parts += [f"[red]{counts.failed} failed[/]"] if counts.failed else []
        parts += (
            [f"[yellow]{counts.cancelled + counts.expired} not run[/]"] if counts.cancelled + counts.expired else []
        )
        self._progress.update(self._task, completed=ended, counts=", ".join(parts))
