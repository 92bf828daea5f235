"""visionq: asynchronous image classification on FastAPI, Redis and Celery.

`visionq.Client` and `visionq.AsyncClient` are the Python SDK (docs/sdk.md). They are imported on first
use, so that `import visionq` stays cheap for the server, the worker and the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from visionq.client import AsyncClient, Client

__version__ = "0.1.0"

__all__ = ["AsyncClient", "Client", "__version__"]

_LAZY = frozenset({"AsyncClient", "Client"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from visionq import client

        return getattr(client, name)
    raise AttributeError(f"module 'visionq' has no attribute {name!r}")
