"""`visionq serve` as a user runs it: one command, a cat classified by `visionq classify`, Ctrl-C, nothing left."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from e2e.serving import SERVE_START_TIMEOUT
from environment import process_environ
from integration.stack import service_ready, wait_for
from ports import free_port
from tests_support import REPO

#: Seconds `visionq classify` may take for one photo, and `visionq serve` to stop everything.
CLASSIFY_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc (children re-parented elsewhere are not seen)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _listens_on_tcp(pid: int) -> bool:
    try:
        return any(c.status == psutil.CONN_LISTEN for c in psutil.Process(pid).net_connections("inet"))
    except psutil.NoSuchProcess:
        return False


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.timeout(SERVE_START_TIMEOUT + CLASSIFY_TIMEOUT + STOP_TIMEOUT)
def test_serve_classifies_then_stops_everything(tmp_path: Path, stop_signal: signal.Signals) -> None:
    port = free_port()
    env = process_environ()
    env |= {"VISIONQ_DATA_DIR": str(tmp_path / "data"), "VISIONQ_LOG_LEVEL": "WARNING"}
    serve = subprocess.Popen(
        [sys.executable, "-m", "visionq", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    stdout = serve.stdout
    assert stdout is not None
    lines: list[str] = []

    def read() -> None:  # each line as it comes: the test waits for one
        for line in stdout:
            lines.append(line.decode(errors="replace"))

    reader = threading.Thread(target=read)
    reader.start()
    banner = f"visionq ready on {url}  (API docs at {url}/docs, Ctrl-C to stop)\n"
    try:
        wait_for(lambda: banner in lines, SERVE_START_TIMEOUT, "visionq serve to say it is ready", interval=0.25)
        assert service_ready(url), "ready when it says so: a worker has the default model"
        helpers = descendants(serve.pid)
        assert len(helpers) >= 2, "an embedded Redis and a worker"
        socket = (tmp_path / "data" / "redis" / "redis.sock").resolve()
        assert socket.is_socket(), "the embedded Redis listens on a Unix socket in the data dir"
        assert not [pid for pid in helpers if _listens_on_tcp(pid)], "nothing but the API listens on TCP"

        classify = subprocess.run(
            [sys.executable, "-m", "visionq", "classify", str(REPO / "examples" / "cat.jpg"), "--url", url],
            env=env,
            capture_output=True,
            text=True,
            timeout=CLASSIFY_TIMEOUT,
        )
        assert classify.returncode == 0, classify.stderr
        assert any(name in classify.stdout for name in ("Egyptian cat", "tabby", "tiger cat")), classify.stdout
    finally:
        serve.send_signal(stop_signal)
        serve.wait(timeout=STOP_TIMEOUT)
        reader.join(timeout=STOP_TIMEOUT)
        stdout.close()

    assert serve.returncode == 0, "".join(lines)[-2000:]
    assert lines[0] == "visionq starting (Ctrl-C to stop)\n"
    assert lines[-1] == "visionq stopped\n"
    assert not [pid for pid in helpers if alive(pid)], "processes left behind"
    assert (tmp_path / "data" / "redis").is_dir(), "the embedded Redis keeps its data in the data dir"
