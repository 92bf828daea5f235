"""A worker whose install has no PyTorch (`visionq[worker]` without the `export` extra) serves the built-in
models from the exports `visionq prepare` made elsewhere, as a worker image does; with none prepared, the job
fails with `model_unavailable` and a message that says what to run, never a traceback about torch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from factories import cat_variants
from integration.conftest import StackFactory
from integration.stack import WorkerProcess, submit, wait_terminal
from tests_support import CAT_CLASSES
from visionq.settings import Settings

#: Put first on a worker's PYTHONPATH: PyTorch and the built-ins' weight packages cannot be imported there.
NO_TORCH = """
import sys
from importlib.abc import MetaPathFinder


class NoTorch(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "efficientnet_lite_pytorch") or name.startswith("efficientnet_lite"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoTorch())
"""


class WorkerWithoutTorch(WorkerProcess):
    def __init__(self, settings: Settings, blocker: Path) -> None:
        super().__init__(settings)
        self.blocker = blocker

    def env(self) -> dict[str, str]:
        return {**super().env(), "PYTHONPATH": str(self.blocker)}


@pytest.fixture(scope="module")
def blocker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("no-torch")
    (folder / "sitecustomize.py").write_text(NO_TORCH)
    return folder


def torchless(start_stack: StackFactory, blocker: Path, name: str, **overrides: object) -> Iterator[str]:
    """A stack whose worker is replaced by one without PyTorch; yields the API's URL."""
    settings, worker, api = start_stack(name, worker_pool="solo", warm_models=[], allow_fallback=False, **overrides)
    worker.stop()
    replacement = WorkerWithoutTorch(settings, blocker)
    replacement.start()
    try:
        yield api.url
    finally:
        replacement.stop()


def test_a_worker_without_torch_serves_the_prepared_exports(start_stack: StackFactory, blocker: Path) -> None:
    for url in torchless(start_stack, blocker, "no-torch"):
        with httpx.Client(base_url=url, timeout=30) as api:
            accepted = submit(api, cat_variants()["jpeg"])
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["job_id"]
            wait_terminal(api, job_id)
            result = api.get(f"/result/{job_id}").json()

        assert result["status"] == "completed", result
        assert result["predictions"][0]["class_id"] in CAT_CLASSES
        assert result["metadata"]["receipt"]["runtime"] == "onnxruntime"


def test_without_torch_or_a_prepared_export_the_job_says_what_to_run(
    start_stack: StackFactory, blocker: Path, tmp_path: Path
) -> None:
    for url in torchless(start_stack, blocker, "no-torch-cold", model_cache_dir=tmp_path):
        with httpx.Client(base_url=url, timeout=30) as api:
            accepted = submit(api, cat_variants()["jpeg"])
            assert accepted.status_code == 202, accepted.text
            result = wait_terminal(api, accepted.json()["job_id"])

        assert result["status"] == "failed", result
        assert result["error"]["code"] == "model_unavailable"
        assert "visionq prepare" in result["error"]["message"], result["error"]
