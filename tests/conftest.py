"""Shared test set-up: markers by folder, the built-in models prepared once, a clean VISIONQ_* environment,
a settings factory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from environment import EXACT_BUILTINS, MODEL_CACHE_VARIABLE, is_setting, model_cache
from visionq.settings import Settings

TESTS = Path(__file__).parent
LAYERS = ("unit", "model", "integration", "e2e")
#: Layers whose tests load the built-in models.
MODEL_LAYERS = {"model", "integration", "e2e"}
#: Seconds `visionq prepare` may take to export and quantise every built-in from nothing, on a busy machine.
PREPARE_TIMEOUT = 600

SettingsFactory = Callable[..., Settings]


def pytest_configure(config: pytest.Config) -> None:
    """Session-scoped fixtures start before any test's `clean_environ`: take the shell's visionq settings out of
    the whole session, and point everything at the prepared model cache."""
    for name in [name for name in os.environ if is_setting(name)]:
        del os.environ[name]
    os.environ[MODEL_CACHE_VARIABLE] = str(model_cache())


def layer_of(item: pytest.Item) -> str:
    return Path(str(item.fspath)).relative_to(TESTS).parts[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if layer_of(item) in LAYERS:
            item.add_marker(getattr(pytest.mark, layer_of(item)))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Export and quantise the built-ins before the first test that needs them, once, so that no test's time
    budget pays for a cold cache (minutes) and every module can run alone. It takes seconds when they are ready."""
    layers = {layer_of(item) for item in session.items}
    if session.config.option.collectonly or not layers & MODEL_LAYERS:
        return
    started = time.monotonic()
    environment = {**os.environ, "VISIONQ_LOG_LEVEL": "WARNING"}
    models = preparation_order(os.environ.get("PYTEST_XDIST_WORKER"), every_build="model" in layers)
    prepared = subprocess.run(
        [sys.executable, "-m", "visionq", "prepare", *models],
        env=environment,
        capture_output=True,
        text=True,
        timeout=PREPARE_TIMEOUT,
        check=False,
    )
    if prepared.returncode != 0:
        raise pytest.UsageError(f"visionq prepare failed:\n{prepared.stdout}{prepared.stderr}")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"built-in models ready in {model_cache()} after {time.monotonic() - started:.1f} s")


def preparation_order(xdist_worker: str | None, *, every_build: bool) -> list[str]:
    """The built-ins a session loads, each family's exact model before its int8 build (made from it). The model
    tests check every int8 build; the integration and end-to-end tests load the exact models and lite0's int8
    build only, so a session of those alone starts on them and leaves the slow int8 builds to a session that checks
    them (CI runs both at once: the cache's per-file locks then let each make different models, the model tests'
    session from the other end). Each xdist process starts on a family of its own, for the same reason."""
    from visionq.inference.quantize import int8_unsupported

    def builds(name: str, int8: bool) -> list[str]:
        return [name, *([f"{name}-int8"] if int8 and int8_unsupported() is None else [])]

    if every_build:
        return [ref for name in reversed(EXACT_BUILTINS) for ref in builds(name, True)]
    first = int(xdist_worker.removeprefix("gw")) if xdist_worker else 0
    exact = [*EXACT_BUILTINS[first % 3 :], *EXACT_BUILTINS[: first % 3]]
    return [ref for name in exact for ref in builds(name, name == EXACT_BUILTINS[0])]


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts with no VISIONQ_* variables (but the VISIONQ_TEST_* ones that say where the test
    servers are, and the prepared model cache) and no .env file in its working directory."""
    for name in list(os.environ):
        if is_setting(name) and name != MODEL_CACHE_VARIABLE:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    def factory(**overrides: Any) -> Settings:
        overrides.setdefault("data_dir", tmp_path / "data")
        return Settings(**overrides)

    return factory
