"""What the CLI's client commands print: one record per image, as a rich table or as JSON lines."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from visionq.client.common import Outcome
from visionq.client.errors import ClientError, ConnectionFailed, JobTimeout, ProblemError
from visionq.wire.jobs import FailureBody, ResultBody, StatusBody
from visionq.wire.schemas import (
    BATCH_CSV_COLUMNS,
    BatchItem,
    BatchStatus,
    JobAccepted,
    ModelCard,
    ModelInfo,
    batch_csv_row,
)
from visionq.wire.states import JobStatus

#: `status` of a JSON line for an image the API refused (no job was made).
REFUSED = "refused"
#: `status` of a JSON line for a job still running when `--timeout` ran out (the job goes on).
TIMED_OUT = "timed_out"


@dataclass
class ImageJob:
    """One image of a `visionq classify` run: its job once accepted, then its outcome, or why it has none."""

    file: Path
    job: JobAccepted | None = None
    outcome: Outcome | None = None
    refusal: ProblemError | None = None
    timeout: JobTimeout | None = None

    @property
    def classified(self) -> bool:
        return isinstance(self.outcome, ResultBody)

    @property
    def status(self) -> str:
        if self.outcome is not None:
            return self.outcome.status.value
        if self.refusal is not None:
            return REFUSED
        if self.timeout is not None:
            return TIMED_OUT
        return JobStatus.PENDING.value

    def to_json(self) -> dict[str, Any]:
        """The JSON line: `file`, then the result or failure body, the JobAccepted (`--no-wait`), or an error."""
        line: dict[str, Any] = {"file": str(self.file)}
        if self.outcome is not None:
            return line | self.outcome.model_dump(mode="json")
        if self.refusal is not None:
            return line | {"status": REFUSED, "error": problem_json(self.refusal)}
        if self.job is not None:
            line |= self.job.model_dump(mode="json")
        if self.timeout is not None:
            line |= {"status": TIMED_OUT, "error": {"code": TIMED_OUT, "detail": str(self.timeout)}}
        return line

    def problem_line(self) -> str | None:
        """`file: error[code]: detail` for an image that was not classified, else None."""
        if self.refusal is not None:
            return f"{self.file}: error[{self.refusal.code}]: {self.refusal.detail}"
        if isinstance(self.outcome, FailureBody):
            code, message = failure_text(self.outcome)
            return f"{self.file}: error[{code}]: {message} (job {self.outcome.job_id})"
        if self.timeout is not None:
            return f"{self.file}: error[{TIMED_OUT}]: {self.timeout}"
        return None


def failure_text(outcome: FailureBody) -> tuple[str, str]:
    """The code and message of a failed or cancelled job (its status when it carries no error)."""
    if outcome.error is None:
        return outcome.status.value, ""
    return outcome.error.code, outcome.error.message


def problem_json(error: ClientError) -> dict[str, Any]:
    if isinstance(error, ProblemError):
        return {"code": error.code, "status": error.status, "detail": error.detail}
    if isinstance(error, ConnectionFailed):
        detail = f"could not reach the visionq API at {error.url}: {error.reason}. Is the service running there? "
        return {"code": "connection_failed", "detail": detail + "Pass its address with --url or set VISIONQ_URL."}
    return {"code": type(error).__name__, "detail": str(error)}


def json_line(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def results_table(jobs: list[ImageJob]) -> Table:
    """The summary after a run: file, top-1 (or why there is none), confidence, model, time in the service."""
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("file", overflow="fold")
    table.add_column("top-1")
    table.add_column("confidence", justify="right")
    table.add_column("model", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    for job in jobs:
        if isinstance(job.outcome, ResultBody):
            top = job.outcome.predictions[0]
            total = _duration(job.outcome.metadata.total_time)
            table.add_row(str(job.file), top.class_name, f"{top.confidence:.3f}", job.outcome.model_version, total)
        else:
            table.add_row(str(job.file), f"[red]{job.status}: {_error_code(job)}[/]", "", _model(job), "")
    return table


def accepted_table(jobs: list[ImageJob]) -> Table:
    """`--no-wait`: the job id of each accepted image, or why it was refused."""
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("file", overflow="fold")
    table.add_column("job id", no_wrap=True)
    table.add_column("model", no_wrap=True)
    for job in jobs:
        if job.job is not None:
            table.add_row(str(job.file), job.job.job_id, job.job.model_version)
        else:
            table.add_row(str(job.file), f"[red]{REFUSED}: {_error_code(job)}[/]", "")
    return table


def predictions_table(result: ResultBody, *, title: str | None = None) -> Table:
    """Every prediction of one result, titled by `title` (a file name), else by the job id."""
    table = Table(
        title=title if title is not None else f"job {result.job_id}",
        caption=f"{result.model_version} · {_duration(result.metadata.total_time)}",
    )
    table.add_column("class id", justify="right")
    table.add_column("class")
    table.add_column("confidence", justify="right")
    for prediction in result.predictions:
        table.add_row(str(prediction.class_id), prediction.class_name, f"{prediction.confidence:.3f}")
    return table


def status_table(status: StatusBody) -> Table:
    table = Table(show_header=False, show_edge=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows = {
        "job": status.job_id,
        "status": status.status.value,
        "stage": status.stage.value,
        "progress": f"{status.progress}%",
        "model": status.model_version,
        "priority": status.priority.value,
        "created": status.created_at,
        "updated": status.updated_at,
        "worker": status.worker_id or "-",
        "attempts": str(status.attempts),
    }
    if status.error is not None:
        rows["error"] = f"[red]{status.error.code}[/]: {status.error.message}"
    for name, value in rows.items():
        table.add_row(name, value)
    return table


def models_table(models: list[ModelInfo]) -> Table:
    table = Table()
    table.add_column("model", no_wrap=True)
    for column in ("aliases", "input", "classes", "runtime", "loaded"):
        table.add_column(column)
    for info in models:
        table.add_row(
            f"{info.name}@{info.version}",
            ", ".join(info.aliases),
            str(info.input_size),
            str(info.num_classes),
            info.runtime,
            "yes" if info.loaded else "no",
        )
    return table


def card_table(card: ModelCard) -> Table:
    """One model's card, a field a row; `-` where the workers have not reported a figure."""
    table = Table(show_header=False, show_edge=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    transform = card.transform
    crop = f" {transform.crop_fraction:g}" if transform.resize == "center_crop" else ""
    rows = {
        "model": f"{card.name}@{card.version}",
        "aliases": ", ".join(card.aliases) or "-",
        "description": card.description or "-",
        "runtime": " ".join(filter(None, (card.runtime, card.runtime_version))),
        "precision": card.precision,
        "agreement": "-" if card.agreement is None else f"{card.agreement:.3f} of {card.agreement_sample or '?'}",
        "loaded": "yes" if card.loaded else "no",
        "breaker": card.breaker + (f" ({card.breaker_reason})" if card.breaker_reason else ""),
        "input": f"{transform.input_size}×{transform.input_size} {transform.channel_order}",
        "resize": f"{transform.resize}{crop}, {transform.interpolation}",
        "mean": ", ".join(f"{v:.4f}" for v in transform.mean),
        "std": ", ".join(f"{v:.4f}" for v in transform.std),
        "classes": str(card.num_classes),
        "preprocessing": card.preprocessing_sha256,
        "labels": card.labels_sha256,
        "weights": card.weights_sha256 or "-",
    }
    if card.cpu_feature:
        rows["cpu feature"] = card.cpu_feature
    for name, value in rows.items():
        table.add_row(name, value)
    return table


def _error_code(job: ImageJob) -> str:
    if job.refusal is not None:
        return job.refusal.code
    if isinstance(job.outcome, FailureBody) and job.outcome.error is not None:
        return job.outcome.error.code
    return job.status


def _model(job: ImageJob) -> str:
    return job.job.model_version if job.job is not None else ""


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def batch_table(status: BatchStatus) -> Table:
    """A finished batch's counts by outcome."""
    table = Table(title=f"batch {status.batch_id}: {status.status}")
    for column in ("images", "completed", "failed", "cancelled", "expired"):
        table.add_column(column, justify="right")
    counts = status.counts
    table.add_row(*map(str, (status.total, counts.completed, counts.failed, counts.cancelled, counts.expired)))
    return table


def write_batch_results(path: Path, items: Iterable[BatchItem]) -> int:
    """Write a batch's items to `path`: JSON Lines, or CSV (the top prediction) for a `.csv` name. Returns how many."""
    written = 0
    with path.open("w", newline="", encoding="utf-8") as file:
        rows = csv.writer(file) if path.suffix.lower() == ".csv" else None
        if rows is not None:
            rows.writerow(BATCH_CSV_COLUMNS)
        for item in items:
            written += 1
            if rows is None:
                file.write(item.model_dump_json(exclude_none=True) + "\n")
            else:
                rows.writerow(batch_csv_row(item.model_dump(mode="json")))
    return written
