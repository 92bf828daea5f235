"""VisionqClient: a small synchronous HTTP client for the API, used by the CLI."""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from visionq.jobs.states import TERMINAL_STATUSES

#: Seconds between status polls while following a job.
POLL_INTERVAL = 0.1


class ProblemError(Exception):
    """The API refused a request with a problem+json body."""

    def __init__(self, code: str, status: int, detail: str) -> None:
        super().__init__(f"{code} ({status}): {detail}")
        self.code = code
        self.status = status
        self.detail = detail


class VisionqClient:
    """Submit images and follow jobs.

    >>> with VisionqClient("http://127.0.0.1:8000") as client:   # doctest: +SKIP
    ...     job = client.submit(Path("cat.jpg"))
    ...     result = client.wait(job["job_id"])
    """

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self._http = httpx.Client(base_url=url, timeout=timeout)

    def __enter__(self) -> VisionqClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._http.close()

    def submit(self, image: Path, *, model: str = "latest", priority: str = "normal", top_k: int = 5) -> dict[str, Any]:
        with image.open("rb") as file:
            response = self._http.post(
                "/classify",
                files={"file": (image.name, file)},
                data={"model_version": model, "priority": priority, "top_k": str(top_k)},
            )
        return _json(response)

    def status(self, job_id: str) -> dict[str, Any]:
        return _json(self._http.get(f"/status/{job_id}"))

    def result(self, job_id: str) -> dict[str, Any]:
        return _json(self._http.get(f"/result/{job_id}"))

    def models(self) -> list[dict[str, Any]]:
        response = self._http.get("/models")
        _raise_for_problem(response)
        models: list[dict[str, Any]] = response.json()
        return models

    def wait(self, job_id: str, *, timeout: float = 300.0) -> dict[str, Any]:
        """Poll until the job is terminal, then return its result body."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status(job_id)["status"] in TERMINAL_STATUSES:
                return self.result(job_id)
            time.sleep(POLL_INTERVAL)
        raise TimeoutError(f"job {job_id} did not finish within {timeout:.0f}s")


def _raise_for_problem(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
        raise ProblemError(str(body["code"]), response.status_code, str(body["detail"]))
    except (ValueError, KeyError):
        raise ProblemError("internal_error", response.status_code, response.text[:200]) from None


def _json(response: httpx.Response) -> dict[str, Any]:
    _raise_for_problem(response)
    body: dict[str, Any] = response.json()
    return body
