"""What the SDK and the CLI's client commands read from `VISIONQ_*` variables (or a `.env` file): where the API
is and the credentials to send. The server's settings extend these, so `docs/configuration.md` lists them once."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClientSettings(BaseSettings):
    """The client's configuration. Every field is `VISIONQ_<NAME>` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="VISIONQ_", env_file=".env", extra="ignore", use_attribute_docstrings=True, frozen=True
    )

    url: str = "http://127.0.0.1:8000"
    """Base URL of the API that the CLI's client commands (`visionq classify`, `status`, `result`, `watch`,
    `models`) and the Python SDK talk to."""

    api_key: SecretStr | None = None
    """API key the CLI and the SDK send as `X-API-Key` when the service requires authentication."""

    token: SecretStr | None = None
    """JWT access token the CLI and the SDK send as `Authorization: Bearer` (instead of an API key)."""
