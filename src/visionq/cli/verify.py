"""`visionq verify JOB_ID IMAGE`: re-run a completed job here, from its receipt, and check the answer is the same.

It fetches the job's result, checks that IMAGE is the image the job classified (by its SHA-256), loads the model
that served the job as a worker does (this machine's settings, catalog and model cache), says where what it loaded
differs from the receipt, then re-runs the decode, the transform and the model and compares the ranking with the
job's top-k, within the tolerance of the model's precision (`inference/receipts.py`).

Exit statuses: 0 when the re-run gives the job's answer; 1 when it does not, when IMAGE is not the job's image, or
when there is nothing to check against (a job that did not complete, a result without a receipt, a model this
machine does not have); 2 for usage errors.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.table import Table

from visionq.cli.options import (
    EXIT_FAILED,
    EXIT_OK,
    ApiKeyOption,
    TokenOption,
    UrlOption,
    console,
    errors,
    load_settings,
    open_client,
    require_extra,
)
from visionq.cli.report import problem_json
from visionq.client.errors import ClientError, NotFinished
from visionq.wire.jobs import FailureBody, Prediction, Receipt, ResultBody

if TYPE_CHECKING:
    from visionq.inference.receipts import Difference, Tolerance
    from visionq.settings import Settings

#: Hex digits of a digest shown in the tables (the differences print them whole).
SHORT_DIGEST = 16


def verify(
    job_id: Annotated[str, typer.Argument(help="The id of a completed job.")],
    image: Annotated[
        Path, typer.Argument(help="The image file the job classified.", exists=True, dir_okay=False, readable=True)
    ],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    token: TokenOption = None,
) -> None:
    """Re-run a completed job here from its receipt: exit 0 when this machine gives the same top-k, 1 otherwise."""
    require_extra("verify", "worker")
    result = _completed_result(job_id, url, api_key, token)
    receipt = result.metadata.receipt
    if receipt is None:
        _fail(
            f"job {job_id}'s result carries no receipt (it was made before results had one): "
            "there is nothing to check a re-run against"
        )
    data = image.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != receipt.image_sha256:
        _fail(
            f"the image you gave is not the one the job classified: {image} has SHA-256 {digest}, "
            f"the job's image {receipt.image_sha256}"
        )
    _rerun(result, receipt, data, load_settings(url=url))


def _completed_result(job_id: str, url: str | None, api_key: str | None, token: str | None) -> ResultBody:
    """The job's result body; exits 1 with why when the job did not complete or the API refused or is away."""
    try:
        with open_client(url, api_key, token) as client:
            outcome = client.result(job_id)
    except NotFinished as running:
        _fail(f"job {job_id} is still {running.status.status.value}: there is nothing to verify until it completes")
    except ClientError as exc:
        problem = problem_json(exc)
        _fail(f"error[{problem['code']}]: {problem['detail']}")
    if isinstance(outcome, FailureBody):
        why = f": error[{outcome.error.code}]: {outcome.error.message}" if outcome.error is not None else ""
        _fail(f"job {job_id} {outcome.status.value}{why}; only a completed job can be verified")
    return outcome


def _rerun(result: ResultBody, receipt: Receipt, data: bytes, settings: Settings) -> None:
    """Load the model that served the job, compare it with the receipt, re-run it on `data`, report, exit."""
    from visionq.errors import VisionqError
    from visionq.inference.receipts import build_receipt, prediction_differences, receipt_differences, tolerance_for
    from visionq.inference.registry import ModelRegistry
    from visionq.inference.sources import ModelSources
    from visionq.settings import BuiltinRuntime
    from visionq.worker.pipeline import run_classification

    served = result.metadata.served_by or result.model_version
    try:
        sources = ModelSources(settings)
        catalog = sources.catalog
        spec = catalog.resolve(served)
        registry = ModelRegistry(
            catalog,
            device=settings.device,
            threads=settings.threads_per_job,
            cache=settings.model_cache,
            builtin_onnx=settings.builtin_runtime is BuiltinRuntime.ONNX,
            weights=sources.ensure_weights,
        )
        classifier = registry.get(spec)
        labels = catalog.labels(spec)
        here = build_receipt(data, spec, registry.identity(spec), labels)
        # The whole ranking, so that an int8 re-run can be checked class by class whatever order it gives.
        ranking = run_classification(
            data,
            classifier=classifier,
            labels=labels,
            top=spec.num_classes,
            max_pixels=settings.max_pixels,
            report=lambda stage: None,
            draft=settings.jpeg_draft,
        ).predictions
    except VisionqError as exc:
        _fail(f"cannot re-run job {result.job_id} here: error[{exc.code}]: {exc.detail}")
    except (ValueError, OSError, RuntimeError) as exc:  # a broken manifest, a missing file, a refused export
        _fail(f"cannot re-run job {result.job_id} here with {served}: {exc}")

    tolerance = tolerance_for(receipt.precision)
    console.print(_receipt_table(result, receipt, here))
    console.print(_predictions_table(result.predictions, ranking, tolerance))
    differences = receipt_differences(receipt, here)
    for difference in differences:
        console.print(_describe(difference), markup=False, highlight=False, soft_wrap=True)
    problems = prediction_differences(result.predictions, ranking, tolerance)
    if problems:
        _fail(f"not verified: the re-run here does not give job {result.job_id}'s answer: " + "; ".join(problems))
    note = f" (though {len(differences)} receipt field(s) differ, listed above)" if differences else ""
    console.print(
        f"verified: the re-run here gives job {result.job_id}'s answer: "
        f"{tolerance.describe(len(result.predictions))}{note}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(EXIT_OK)


def _receipt_table(result: ResultBody, job: Receipt, here: Receipt) -> Table:
    table = Table(title=f"job {result.job_id} · {result.metadata.served_by or result.model_version}")
    for column in ("receipt", "job", "here", ""):
        table.add_column(column, no_wrap=True)
    rows = [
        ("image sha256", job.image_sha256, here.image_sha256),
        ("weights sha256", job.weights_sha256, here.weights_sha256),
        ("runtime", f"{job.runtime} {job.runtime_version}", f"{here.runtime} {here.runtime_version}"),
        ("precision", job.precision, here.precision),
        ("preprocessing sha256", job.preprocessing_sha256, here.preprocessing_sha256),
        ("labels sha256", job.labels_sha256, here.labels_sha256),
    ]
    for name, theirs, ours in rows:
        shown = (theirs[:SHORT_DIGEST], ours[:SHORT_DIGEST]) if name.endswith("sha256") else (theirs, ours)
        table.add_row(name, *shown, "same" if theirs == ours else "[red]differs[/]")
    return table


def _predictions_table(job: list[Prediction], ranking: list[Prediction], tolerance: Tolerance) -> Table:
    """The job's top-k beside the re-run's, rank by rank; `difference` is of the job's class's probability."""
    table = Table(title="top-k: the job's and the re-run's", caption=tolerance.describe(len(job)))
    table.add_column("rank", justify="right")
    table.add_column("job")
    table.add_column("job confidence", justify="right")
    table.add_column("re-run")
    table.add_column("re-run confidence", justify="right")
    table.add_column("difference", justify="right")
    probabilities = {prediction.class_id: prediction.confidence for prediction in ranking}
    for rank, (theirs, ours) in enumerate(zip(job, ranking, strict=False), start=1):
        local = probabilities.get(theirs.class_id)
        gap = "absent" if local is None else f"{abs(local - theirs.confidence):.1e}"
        within = local is not None and abs(local - theirs.confidence) <= tolerance.probability
        ours_name = f"{ours.class_id} {ours.class_name}"
        table.add_row(
            str(rank),
            f"{theirs.class_id} {theirs.class_name}",
            f"{theirs.confidence:.6f}",
            ours_name if ours.class_id == theirs.class_id else f"[red]{ours_name}[/]",
            f"{ours.confidence:.6f}",
            gap if within else f"[red]{gap}[/]",
        )
    return table


def _describe(difference: Difference) -> str:
    what = {
        "weights_sha256": "the weights file differs (another export, int8 build or runtime version makes another file)",
        "runtime": "the runtime differs",
        "runtime_version": "the runtime's version differs",
        "precision": "the precision differs",
        "preprocessing_sha256": "the preprocessing differs",
        "labels_sha256": "the class names differ",
    }.get(difference.field, f"{difference.field} differs")
    return f"differs: {what}: {difference.field} is {difference.job} in the job, {difference.here} here"


def _fail(message: str) -> NoReturn:
    errors.print(message, markup=False, highlight=False)
    raise typer.Exit(EXIT_FAILED)
