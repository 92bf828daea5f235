"""The CLI's client commands, all on the Python SDK: classify, status, result, watch, models.

Exit statuses: 0 when everything asked for was classified (or shown), 1 when some image was refused, failed,
was cancelled or did not finish in time, or the API could not be reached, 2 for usage errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from visionq.cli.options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    ApiKeyOption,
    JsonOption,
    TimeoutOption,
    TokenOption,
    UrlOption,
    console,
    errors,
    open_async_client,
    open_client,
)
from visionq.cli.paths import PathsNotFound, expand_images
from visionq.cli.progress import BatchBar, JobBars
from visionq.cli.report import (
    ImageJob,
    accepted_table,
    batch_table,
    card_table,
    failure_text,
    json_line,
    models_table,
    predictions_table,
    problem_json,
    results_table,
    status_table,
    write_batch_results,
)
from visionq.client.aio import AsyncClient
from visionq.client.common import DEFAULT_WAIT, ImageInput, Outcome
from visionq.client.errors import ClientError, JobTimeout, NotFinished, ProblemError
from visionq.wire.jobs import FailureBody, ResultBody
from visionq.wire.states import Priority

#: Uploads in flight at once; following jobs needs only a WebSocket each, so many more are followed at once.
UPLOADS_AT_ONCE = 4

JobIdArgument = Annotated[str, typer.Argument(help="The job id that `visionq classify --no-wait` printed.")]


def classify(
    paths: Annotated[
        list[str], typer.Argument(help="Image files, directories (their image files) or quoted globs ('**/*.jpg').")
    ],
    model: Annotated[str, typer.Option(help="`latest`, a model name, or name@version.")] = "latest",
    priority: Annotated[
        Priority | None, typer.Option(help="Queue priority (default: normal; a batch's: low).", show_default=False)
    ] = None,
    top_k: Annotated[int, typer.Option(help="Predictions per image (the table shows the first).", min=1, max=20)] = 5,
    callback_url: Annotated[str | None, typer.Option(help="URL that receives each result when it is ready.")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Print the job ids at once instead of waiting.")] = False,
    concurrency: Annotated[int, typer.Option(help="Jobs followed at once.", min=1, max=1000)] = 64,
    timeout: TimeoutOption = DEFAULT_WAIT,
    as_json: JsonOption = False,
    batch: Annotated[
        bool,
        typer.Option(
            "--batch",
            help="Send the images as one batch (PATHS: a directory, a zip or tar archive, or image files): one "
            "progress bar, the results in a file. Priority `low` unless --priority says otherwise.",
        ),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            help="With --batch: the results file, JSON Lines, or CSV for a .csv name (default: "
            "visionq-<batch id>.jsonl)."
        ),
    ] = None,  # fmt: skip
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    token: TokenOption = None,
) -> None:
    """Submit images and show one live progress bar per image, then a results table."""
    if batch:
        _classify_batch(paths, model, priority, top_k, callback_url, timeout, output, url, api_key, token)
    try:
        files = expand_images(paths)
    except PathsNotFound as missing:
        errors.print(f"error: no such file, directory or match: {', '.join(missing.arguments)}")
        raise typer.Exit(EXIT_USAGE) from None
    if not files:
        errors.print("error: no image files found (directories give their .jpg/.png/.webp/.gif/.bmp/.tif files)")
        raise typer.Exit(EXIT_USAGE)
    jobs = [ImageJob(file) for file in files]
    client = open_async_client(url, api_key, token)
    run = _Run(client, model, priority or Priority.NORMAL, top_k, callback_url, timeout, no_wait, concurrency)
    bars = JobBars(console, visible=console.is_terminal and not as_json)
    try:
        asyncio.run(run.all(jobs, bars))
    except KeyboardInterrupt:
        _interrupted(jobs)
    except ClientError as exc:  # ConnectionFailed: nothing more can be done
        _print_error(exc, as_json)
        raise typer.Exit(EXIT_FAILED) from None
    _report(jobs, as_json, no_wait)
    done = all(job.job is not None for job in jobs) if no_wait else all(job.classified for job in jobs)
    raise typer.Exit(EXIT_OK if done else EXIT_FAILED)


class _Run:
    """One `visionq classify`: submit each image, then follow its job, updating its bar."""

    def __init__(
        self,
        client: AsyncClient,
        model: str,
        priority: Priority,
        top_k: int,
        callback_url: str | None,
        timeout: float,
        no_wait: bool,
        concurrency: int,
    ) -> None:
        self.client = client
        self.model = model
        self.priority = priority
        self.top_k = top_k
        self.callback_url = callback_url
        self.timeout = timeout
        self.no_wait = no_wait
        self.concurrency = concurrency

    async def all(self, jobs: list[ImageJob], bars: JobBars) -> None:
        uploads = asyncio.Semaphore(UPLOADS_AT_ONCE)
        follows = asyncio.Semaphore(self.concurrency)
        try:
            with bars:  # outside the task group, so that the bars stay up until every task has ended
                async with self.client, asyncio.TaskGroup() as group:
                    for job in jobs:
                        group.create_task(self._one(job, bars, uploads, follows))
        except ExceptionGroup as failed:  # the first failure (ConnectionFailed) stopped them all
            raise failed.exceptions[0] from None

    async def _one(self, job: ImageJob, bars: JobBars, uploads: asyncio.Semaphore, follows: asyncio.Semaphore) -> None:
        bar = bars.add(job.file.name)
        async with uploads:
            try:
                job.job = await self.client.submit(
                    job.file,
                    model=self.model,
                    priority=self.priority.value,
                    top_k=self.top_k,
                    callback_url=self.callback_url,
                )
            except ProblemError as refused:
                job.refusal = refused
                bars.refuse(bar, refused)
                return
        bars.accept(bar)
        if self.no_wait:
            return
        async with follows:
            try:
                job.outcome = await self.client.wait(job.job, self.timeout, on_status=bars.follow(bar))
            except JobTimeout as gave_up:
                job.timeout = gave_up
                bars.give_up(bar, "timed out")


def _classify_batch(
    paths: list[str],
    model: str,
    priority: Priority | None,
    top_k: int,
    callback_url: str | None,
    timeout: float,
    output: Path | None,
    url: str | None,
    api_key: str | None,
    token: str | None,
) -> None:
    """`visionq classify --batch`: one batch, one progress bar, the results written to a file. Exits."""
    missing = [path for path in paths if not Path(path).exists()]
    if missing:
        errors.print(f"error: no such file or directory: {', '.join(missing)}")
        raise typer.Exit(EXIT_USAGE)
    images: ImageInput | list[ImageInput] = paths[0] if len(paths) == 1 else list[ImageInput](paths)
    try:
        with open_client(url, api_key, token) as client, BatchBar(console, visible=console.is_terminal) as bar:
            sent = client.submit_batch(
                images, model=model, priority=(priority or Priority.LOW).value, top_k=top_k, callback_url=callback_url
            )
            bar.start(sent.accepted.total)
            final = sent.wait(timeout, on_status=bar.show)
            target = output or Path(f"visionq-{sent.batch_id}.jsonl")
            written = write_batch_results(target, sent.results())
    except TimeoutError as gave_up:
        errors.print(f"error: {gave_up}; the batch goes on in the service")
        raise typer.Exit(EXIT_FAILED) from None
    except (ClientError, ProblemError) as exc:
        _print_error(exc, False)
        raise typer.Exit(EXIT_FAILED) from None
    console.print(batch_table(final))
    console.print(f"{written} results in {target}")
    raise typer.Exit(EXIT_OK if final.counts.completed == final.total else EXIT_FAILED)


def _report(jobs: list[ImageJob], as_json: bool, no_wait: bool) -> None:
    if as_json:
        for job in jobs:
            typer.echo(json_line(job.to_json()))
        return
    if no_wait:
        console.print(accepted_table(jobs))
    elif len(jobs) == 1 and isinstance(jobs[0].outcome, ResultBody):  # one image: all its predictions
        console.print(predictions_table(jobs[0].outcome, title=str(jobs[0].file)))
    else:
        console.print(results_table(jobs))
    for job in jobs:
        line = job.problem_line()
        if line is not None:
            errors.print(line, markup=False, highlight=False)


def _interrupted(jobs: list[ImageJob]) -> None:
    running = [job.job.job_id for job in jobs if job.job is not None and job.outcome is None]
    errors.print("interrupted.")
    if running:
        errors.print(f"{len(running)} job(s) go on in the service; follow one with `visionq watch ID`:")
        for job_id in running:
            errors.print(f"  {job_id}")
    raise typer.Exit(EXIT_INTERRUPTED)


def status(
    job_id: JobIdArgument,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    token: TokenOption = None,
) -> None:
    """Show where a job is: status, stage, progress, worker, attempts."""
    with open_client(url, api_key, token) as client, _failures_reported(as_json):
        body = client.status(job_id)
    if as_json:
        typer.echo(json_line(body.model_dump(mode="json")))
    else:
        console.print(status_table(body))


def result(
    job_id: JobIdArgument,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    token: TokenOption = None,
) -> None:
    """Print a job's predictions. Exits 1 if it failed, was cancelled, or has not finished yet."""
    with open_client(url, api_key, token) as client, _failures_reported(as_json):
        try:
            outcome = client.result(job_id)
        except NotFinished as running:
            if as_json:
                typer.echo(json_line(running.status.model_dump(mode="json")))
            else:
                errors.print(f"{running}; or run `visionq watch {job_id}`")
            raise typer.Exit(EXIT_FAILED) from None
    _print_outcome(outcome, as_json)


def watch(
    job_id: JobIdArgument,
    timeout: TimeoutOption = DEFAULT_WAIT,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    token: TokenOption = None,
) -> None:
    """Follow a job live until it finishes, then print its predictions. With --json, one line per update."""
    with open_client(url, api_key, token) as client, _failures_reported(as_json):
        try:
            if as_json:
                outcome = client.wait(
                    job_id, timeout, on_status=lambda body: typer.echo(json_line(body.model_dump(mode="json")))
                )
            else:
                with JobBars(console) as bars:
                    outcome = client.wait(job_id, timeout, on_status=bars.follow(bars.add(job_id)))
        except KeyboardInterrupt:
            errors.print(f"stopped watching; job {job_id} goes on in the service")
            raise typer.Exit(EXIT_INTERRUPTED) from None
    _print_outcome(outcome, as_json)


def models(
    ref: Annotated[
        str | None, typer.Argument(help="Show this model's card instead: `latest`, a name, or name@version.")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    token: TokenOption = None,
) -> None:
    """List the models the service offers and whether a worker has them loaded, or show one model's card."""
    if ref is not None:
        with open_client(url, api_key, token) as client, _failures_reported(as_json):
            card = client.model(ref)
        if as_json:
            typer.echo(json_line(card.model_dump(mode="json")))
        else:
            console.print(card_table(card))
        return
    with open_client(url, api_key, token) as client, _failures_reported(as_json):
        listing = client.models()
    if as_json:
        for info in listing:
            typer.echo(json_line(info.model_dump(mode="json")))
    else:
        console.print(models_table(listing))


def _print_outcome(outcome: Outcome, as_json: bool) -> None:
    """The result body; exits 1 unless the job completed."""
    if as_json:
        typer.echo(json_line(outcome.model_dump(mode="json")))
    elif isinstance(outcome, ResultBody):
        console.print(predictions_table(outcome))
    if isinstance(outcome, FailureBody):
        if not as_json:
            code, message = failure_text(outcome)
            errors.print(f"job {outcome.job_id} {outcome.status.value}: error[{code}]: {message}", markup=False)
        raise typer.Exit(EXIT_FAILED)


@contextmanager
def _failures_reported(as_json: bool) -> Iterator[None]:
    """A refusal or connection failure inside becomes its report and exit status 1."""
    try:
        yield
    except ClientError as exc:
        _print_error(exc, as_json)
        raise typer.Exit(EXIT_FAILED) from None


def _print_error(exc: ClientError, as_json: bool) -> None:
    """A refusal or a connection failure: a JSON line with `error` under --json, `error[code]: detail` otherwise."""
    problem = problem_json(exc)
    if as_json:
        typer.echo(json_line({"error": problem}))
    else:
        errors.print(f"error[{problem['code']}]: {problem['detail']}", markup=False, highlight=False)
