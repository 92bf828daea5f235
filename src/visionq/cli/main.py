"""The `visionq` command: serve, api, worker, classify, models."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from visionq.cli.client import POLL_INTERVAL, ProblemError, VisionqClient
from visionq.jobs.states import TERMINAL_STATUSES, Priority
from visionq.settings import Settings, WorkerPool, get_settings

app = typer.Typer(
    help="visionq: asynchronous image classification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()
errors = Console(stderr=True)


def _settings(**overrides: Any) -> Settings:
    try:
        return get_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        errors.print(f"error[validation_error]: invalid configuration:\n{exc}")
        raise typer.Exit(2) from exc


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8000).")] = None,
) -> None:
    """Run everything on this machine: embedded Redis, a worker and the API. Ctrl-C stops it all."""
    from visionq.cli.serve import serve as run

    settings = _settings(host=host, port=port)
    _configure_logging(settings)
    console.print(f"visionq on http://{settings.host}:{settings.port}  (API docs at /docs, Ctrl-C to stop)")
    try:
        run(settings)
    except KeyboardInterrupt:
        console.print("visionq stopped")


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Run the HTTP API alone, against the Redis of VISIONQ_REDIS_URL."""
    import uvicorn

    from visionq.api.app import server_config

    settings = _settings(host=host, port=port)
    _configure_logging(settings)
    uvicorn.Server(server_config(settings)).run()


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(help="Jobs run at once (processes for prefork).")] = None,
    pool: Annotated[WorkerPool | None, typer.Option(help="Celery pool.")] = None,
) -> None:
    """Run a Celery worker alone, against the Redis of VISIONQ_REDIS_URL."""
    import visionq.worker.signals  # noqa: F401  (connects the per-process set-up)
    from visionq.worker.celery_app import create_celery_app

    settings = _settings(worker_concurrency=concurrency, worker_pool=pool)
    _configure_logging(settings)
    celery = create_celery_app(settings)
    celery.worker_main(
        [
            "worker",
            f"--queues={settings.queue}",
            f"--pool={settings.worker_pool.value}",
            f"--concurrency={settings.worker_concurrency}",
            f"--loglevel={settings.log_level}",
            "--hostname=visionq@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@app.command()
def classify(
    images: Annotated[list[Path], typer.Argument(help="Image files to classify.", exists=True, dir_okay=False)],
    model: Annotated[str, typer.Option(help="`latest`, a model name or name@version.")] = "latest",
    priority: Annotated[Priority, typer.Option(help="Queue priority.")] = Priority.NORMAL,
    top_k: Annotated[int, typer.Option(help="Predictions to show.", min=1, max=20)] = 5,
    url: Annotated[
        str | None, typer.Option(help="API base URL (default VISIONQ_URL or http://127.0.0.1:8000).")
    ] = None,
) -> None:
    """Submit images, show live progress, print the predictions."""
    settings = _settings(url=url)
    failed = False
    with VisionqClient(settings.url) as client:
        jobs: dict[Path, str] = {}
        for image in images:
            try:
                jobs[image] = client.submit(image, model=model, priority=priority.value, top_k=top_k)["job_id"]
            except ProblemError as exc:
                errors.print(f"{image}: error[{exc.code}]: {exc.detail}")
                failed = True
        results = _follow(client, jobs)
    for image, result in results.items():
        failed |= not _print_result(image, result)
    raise typer.Exit(1 if failed else 0)


def _follow(client: VisionqClient, jobs: dict[Path, str]) -> dict[Path, dict[str, Any]]:
    import time

    results: dict[Path, dict[str, Any]] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% {task.fields[stage]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bars = {image: progress.add_task(image.name, total=100, stage="queued") for image in jobs}
        while len(results) < len(jobs):
            for image, job_id in jobs.items():
                if image in results:
                    continue
                status = client.status(job_id)
                progress.update(bars[image], completed=status["progress"], stage=status["stage"])
                if status["status"] in TERMINAL_STATUSES:
                    results[image] = client.result(job_id)
            time.sleep(POLL_INTERVAL)
    return results


def _print_result(image: Path, result: dict[str, Any]) -> bool:
    if result["status"] != "completed":
        error = result.get("error") or {}
        errors.print(f"{image}: error[{error.get('code', 'unknown')}]: {error.get('message', result['status'])}")
        return False
    table = Table(title=str(image), caption=f"{result['model_version']} · {result['processing_time'] * 1000:.0f} ms")
    table.add_column("class_id", justify="right")
    table.add_column("class")
    table.add_column("confidence", justify="right")
    for prediction in result["predictions"]:
        table.add_row(str(prediction["class_id"]), prediction["class_name"], f"{prediction['confidence']:.3f}")
    console.print(table)
    return True


@app.command()
def models(
    url: Annotated[
        str | None, typer.Option(help="API base URL (default VISIONQ_URL or http://127.0.0.1:8000).")
    ] = None,
) -> None:
    """List the models the service offers and whether a worker has them loaded."""
    settings = _settings(url=url)
    try:
        with VisionqClient(settings.url) as client:
            listing = client.models()
    except ProblemError as exc:
        errors.print(f"error[{exc.code}]: {exc.detail}")
        raise typer.Exit(1) from exc
    table = Table()
    table.add_column("model", no_wrap=True)
    for column in ("aliases", "input", "classes", "runtime", "loaded"):
        table.add_column(column)
    for info in listing:
        table.add_row(
            f"{info['name']}@{info['version']}",
            ", ".join(info["aliases"]),
            str(info["input_size"]),
            str(info["num_classes"]),
            info["runtime"],
            "yes" if info["loaded"] else "no",
        )
    console.print(table)


@app.command("config-docs", hidden=True)
def config_docs() -> None:
    """Print docs/configuration.md, generated from the settings' field docstrings."""
    from visionq.cli.config_docs import render

    typer.echo(render(), nl=False)


def main() -> None:
    app()
