"""A real S3-protocol server for tests: moto's standalone server, as a subprocess on a free loopback port."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from ports import free_port

#: Seconds moto's server may take to import its services and answer.
S3_START_TIMEOUT = 30.0
#: Seconds it gets to exit on SIGTERM before it is killed.
S3_STOP_TIMEOUT = 10.0
#: Seconds between two knocks while it starts.
POLL_INTERVAL = 0.05


@contextmanager
def s3_server(log: Path) -> Iterator[str]:
    """Run `python -m moto.server` until the block ends; yield its endpoint URL. Its request log goes to `log`
    (a pipe nobody reads would fill up and stall it), and is quoted if it fails to start."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_answering(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(S3_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_answering(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + S3_START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise AssertionError(f"moto's S3 server exited with {process.returncode} at start-up:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:  # ListBuckets
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"moto's S3 server at {url} did not answer within {S3_START_TIMEOUT:.0f}s:\n{log.read_text()}"
            )
        time.sleep(POLL_INTERVAL)
