"""Where the tests' built-in model exports live."""

from __future__ import annotations

import os
from pathlib import Path


def model_cache() -> Path:
    """The model cache every test shares: VISIONQ_TEST_MODEL_CACHE (CI gives each run a fresh one), else the
    machine's default."""
    configured = os.environ.get("VISIONQ_TEST_MODEL_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "visionq"
