"""`visionq admin ...`: the admin API from the command line (queues, workers, models, dead letters, audit).

Talks to the API like the other client commands (`--url`, `--api-key` or `--token`, else VISIONQ_URL,
VISIONQ_API_KEY, VISIONQ_TOKEN); `--json` prints the API's answer as it is.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from visionq.cli.options import (
    EXIT_FAILED,
    ApiKeyOption,
    JsonOption,
    TokenOption,
    UrlOption,
    console,
    errors,
    load_client_settings,
)
from visionq.client.common import auth_headers, connection_failed, problem_from_response, resolve_credentials
from visionq.client.errors import ClientError

app = typer.Typer(help="The admin API: queues, workers, models, dead letters, audit log.", no_args_is_help=True)


def _call(method: str, path: str, url: str | None, api_key: str | None, token: str | None, **kwargs: Any) -> Any:
    base = load_client_settings(url).url
    headers = auth_headers(*resolve_credentials(api_key, token))
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            try:
                response = http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise connection_failed(base, exc) from exc
        if response.is_error:
            raise problem_from_response(response)
    except ClientError as exc:
        code, detail = getattr(exc, "code", "connection_failed"), getattr(exc, "detail", str(exc))
        errors.print(f"error[{code}]: {detail}", markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    return response.json() if response.content else None


def _show(body: Any, as_json: bool, columns: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(body, separators=(",", ":")))
        return
    rows = body if isinstance(body, list) else [body]
    table = Table()
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


@app.command()
def queues(
    as_json: JsonOption = False, url: UrlOption = None, api_key: ApiKeyOption = None, token: TokenOption = None
) -> None:
    """Jobs waiting per priority, processing, dead-lettered; archive and callback backlogs."""
    body = _call("GET", "/admin/queues", url, api_key, token)
    _show(body, as_json, ["queue_depth", "processing", "dead_letters", "archive_backlog", "callbacks_due"])


@app.command()
def workers(
    as_json: JsonOption = False, url: UrlOption = None, api_key: ApiKeyOption = None, token: TokenOption = None
) -> None:
    """Live worker processes and the jobs each is on now."""
    body = _call("GET", "/admin/workers", url, api_key, token)
    _show(body, as_json, ["worker_id", "queue", "models", "jobs_done", "current_jobs", "seen_at"])


@app.command()
def models(
    action: Annotated[str, typer.Argument(help="`list`, `load`, `unload`, `latest` or `reset-latest`.")] = "list",
    model: Annotated[str | None, typer.Argument(help="The model (name or name@version).")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    token: TokenOption = None,
) -> None:
    """List models, load or unload one on every worker, or choose what `latest` means."""
    if action == "list":
        body = _call("GET", "/admin/models", url, api_key, token)
        _show(body, as_json, ["name", "version", "aliases", "runtime", "workers_loaded", "keep_loaded"])
        return
    if action == "reset-latest":
        _show(_call("DELETE", "/admin/models/latest", url, api_key, token), as_json, ["latest"])
        return
    if action not in ("load", "unload", "latest") or model is None:
        errors.print("usage: visionq admin models [list | load MODEL | unload MODEL | latest MODEL | reset-latest]")
        raise typer.Exit(2)
    if action == "latest":
        body = _call("PUT", "/admin/models/latest", url, api_key, token, json={"model": model})
        _show(body, as_json, ["latest"])
    else:
        _show(
            _call("POST", f"/admin/models/{model}/{action}", url, api_key, token),
            as_json,
            ["model_version", "requested"],
        )


@app.command()
def dlq(
    action: Annotated[str, typer.Argument(help="`list`, `retry`, `purge` (one job, or all without JOB_ID).")] = "list",
    job_id: Annotated[str | None, typer.Argument(help="The job.")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    token: TokenOption = None,
) -> None:
    """The dead-letter queue: list it, retry a job, purge one job or all."""
    if action == "list":
        body = _call("GET", "/admin/dlq", url, api_key, token)
        _show(body, as_json, ["job_id", "owner", "model_version", "attempts", "error", "dead_lettered_at"])
    elif action == "retry" and job_id is not None:
        body = _call("POST", f"/admin/dlq/{job_id}/retry", url, api_key, token)
        _show(body, as_json, ["job_id", "status", "attempts"])
    elif action == "purge":
        path = f"/admin/dlq/{job_id}" if job_id is not None else "/admin/dlq"
        body = _call("DELETE", path, url, api_key, token)
        _show(body or {"purged": 1}, as_json, ["purged"])
    else:
        errors.print("usage: visionq admin dlq [list | retry JOB_ID | purge [JOB_ID]]")
        raise typer.Exit(2)


@app.command()
def audit(
    limit: Annotated[int, typer.Option(min=1, max=500, help="Entries to show, newest first.")] = 50,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
    token: TokenOption = None,
) -> None:
    """The audit log of administrative actions."""
    body = _call("GET", "/admin/audit", url, api_key, token, params={"limit": limit})
    _show(body, as_json, ["at", "principal", "action", "target", "details"])
