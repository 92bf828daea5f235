"""What the CLI's commands share: their common options, settings loading, and the SDK client they open."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from visionq.client.aio import AsyncClient
from visionq.client.sync import Client
from visionq.settings import Settings, get_settings

#: Exit status when every image was classified (or, for other commands, the request succeeded).
EXIT_OK = 0
#: Exit status when some image failed, was refused or was not finished in time, or the API could not be reached.
EXIT_FAILED = 1
#: Exit status for usage errors: bad options, paths that name nothing, invalid configuration (typer's own, too).
EXIT_USAGE = 2
#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

console = Console()
# Messages are never wrapped: piped into a log or grep, one message stays one line.
errors = Console(stderr=True, soft_wrap=True)

UrlOption = Annotated[str | None, typer.Option(help="API base URL (default VISIONQ_URL, else http://127.0.0.1:8000).")]
ApiKeyOption = Annotated[
    str | None, typer.Option("--api-key", help="API key sent as X-API-Key (default VISIONQ_API_KEY).")
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="JWT access token sent as a Bearer token (default VISIONQ_TOKEN).")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object per line and nothing else on standard output.")
]
TimeoutOption = Annotated[
    float, typer.Option(help="Seconds to wait for each job before giving up on it (the job goes on).", min=0.1)
]


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment with the given command-line values on top; exit 2 if they are invalid."""
    try:
        return get_settings(**{name: value for name, value in overrides.items() if value is not None})
    except ValidationError as exc:
        errors.print(f"error[validation_error]: invalid configuration:\n{exc}")
        raise typer.Exit(EXIT_USAGE) from exc


def open_client(url: str | None, api_key: str | None, token: str | None) -> Client:
    settings = load_settings(url=url)
    return Client(settings.url, api_key=api_key, token=token)


def open_async_client(url: str | None, api_key: str | None, token: str | None) -> AsyncClient:
    settings = load_settings(url=url)
    return AsyncClient(settings.url, api_key=api_key, token=token)
