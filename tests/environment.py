"""The environment the tests, and the processes they start, run in."""

from __future__ import annotations

import os
from pathlib import Path

#: The exact built-in models (each also has an int8 build, `<name>-int8`).
EXACT_BUILTINS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
#: The only VISIONQ_* setting the whole session shares: where the built-in models' exports are.
MODEL_CACHE_VARIABLE = "VISIONQ_MODEL_CACHE_DIR"


def model_cache() -> Path:
    """The model cache every test shares: VISIONQ_TEST_MODEL_CACHE (CI gives each run a fresh one), else the
    machine's default."""
    configured = os.environ.get("VISIONQ_TEST_MODEL_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "visionq"


def is_setting(name: str) -> bool:
    """Whether an environment variable is a visionq setting (VISIONQ_TEST_* say where the test servers are)."""
    return name.startswith("VISIONQ_") and not name.startswith("VISIONQ_TEST_")


def process_environ() -> dict[str, str]:
    """The environment for a visionq process a test starts: no settings but the shared model cache, so that it
    finds the exports the session prepared."""
    return {name: value for name, value in os.environ.items() if not is_setting(name)} | {
        MODEL_CACHE_VARIABLE: str(model_cache())
    }
