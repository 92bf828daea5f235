"""Shared test set-up: markers by folder, a clean VISIONQ_* environment, a settings factory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from visionq.settings import Settings

TESTS = Path(__file__).parent
LAYERS = ("unit", "model", "integration", "e2e")

SettingsFactory = Callable[..., Settings]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        layer = Path(str(item.fspath)).relative_to(TESTS).parts[0]
        if layer in LAYERS:
            item.add_marker(getattr(pytest.mark, layer))


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts with no VISIONQ_* variables (but the VISIONQ_TEST_* ones that say where the test
    servers are) and no .env file in its working directory."""
    for name in list(os.environ):
        if name.startswith("VISIONQ_") and not name.startswith("VISIONQ_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    def factory(**overrides: Any) -> Settings:
        overrides.setdefault("data_dir", tmp_path / "data")
        return Settings(**overrides)

    return factory
