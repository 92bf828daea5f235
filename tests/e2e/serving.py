"""`visionq serve` as a user starts it, for the end-to-end tests."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from environment import process_environ
from integration.stack import service_ready, wait_for
from ports import free_port

#: Seconds `visionq serve` may take to be ready: it starts Redis, a worker and the API, and loads the model, whose
#: export the session prepared (tests/conftest.py).
SERVE_START_TIMEOUT = 60.0


@contextmanager
def serving(home: Path, **settings: str) -> Iterator[str]:
    """`visionq serve` on a free port, as a user starts it; its log goes to a file so it never blocks on a pipe."""
    port = free_port()
    env = process_environ()
    env |= {"VISIONQ_DATA_DIR": str(home / "data"), "VISIONQ_LOG_LEVEL": "WARNING"}
    env |= {f"VISIONQ_{name.upper()}": value for name, value in settings.items()}
    log_path = home / "serve.log"
    with log_path.open("wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "visionq", "serve", "--port", str(port)], env=env, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: service_ready(url), SERVE_START_TIMEOUT, "visionq serve to be ready", interval=0.25)
        yield url
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=60)
    assert serve.returncode == 0, log_path.read_text(errors="replace")[-2000:]
