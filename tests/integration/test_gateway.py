"""The real nginx (Debian's) with deploy/nginx in front of two real `visionq api` processes.

Only what depends on where it runs is changed from the shipped configuration: the upstream list (two local
ports instead of compose's `api`), the listen ports and pid file (free ones in the test's directory), and a
self-signed certificate made by deploy/nginx/make-cert.sh.
"""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from factories import cat_variants
from integration.stack import ApiProcess, ApiServer, WorkerProcess, wait_for
from ports import free_port
from tests_support import CAT_CLASSES, REPO
from visionq.settings import Settings

Stack = tuple[Settings, WorkerProcess, ApiServer]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
#: Requests fired at the edge, 8 at a time, to go past its per-address burst (40) at 20 r/s however slow
#: this machine is: they would have to take over 6 s to stay within it.
BURST = 160


class Gateway:
    def __init__(self, root: Path, upstreams: list[str]) -> None:
        self.root = root
        self.https, self.http = free_port(), free_port()
        shutil.copytree(REPO / "deploy" / "nginx", root, dirs_exist_ok=True)
        servers = "".join(f"    server {address};\n" for address in upstreams)
        upstream = root / "visionq" / "upstream.conf"
        upstream.write_text(re.sub(r"^ *server .*;\n", servers, upstream.read_text(), count=1, flags=re.MULTILINE))
        server_conf = root / "visionq" / "server.conf"
        server_conf.write_text(server_conf.read_text().replace("8443", str(self.https)).replace("8080", str(self.http)))
        main = root / "nginx.conf"
        main.write_text(main.read_text().replace("pid /tmp/nginx.pid;", f"pid {root}/nginx.pid;"))
        subprocess.run([str(REPO / "deploy" / "nginx" / "make-cert.sh"), str(root / "certs")], check=True)
        self.cert = root / "certs" / "visionq.crt"
        self.tls = ssl.create_default_context(cafile=str(self.cert))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https}"

    def start(self) -> None:
        with (self.root / "error.log").open("wb") as log:
            self.process = subprocess.Popen(
                [NGINX, "-p", str(self.root), "-c", str(self.root / "nginx.conf"), "-g", "daemon off;"], stderr=log
            )
        wait_for(self._answers, 15, "nginx to listen", 0.1)

    def _answers(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, (self.root / "error.log").read_text()
        try:
            return httpx.get(f"{self.url}/health", verify=self.tls, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
        # nginx's warnings (an upstream that closed early, a worker that died) go to its error log; printed here,
        # pytest shows them beside a failed test's output.
        warnings = (self.root / "error.log").read_text(errors="replace") if (self.root / "error.log").exists() else ""
        if warnings.strip():
            sys.stdout.write(f"nginx error log:\n{warnings}")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.tls, timeout=30)


@pytest.fixture(scope="module")
def apis(stack: Stack) -> Iterator[list[ApiProcess]]:
    processes = [ApiProcess(stack[0]), ApiProcess(stack[0])]
    for process in processes:
        process.start()
    yield processes
    for process in processes:
        process.stop()


@contextmanager
def running_gateway(apis: list[ApiProcess], root: Path) -> Iterator[Gateway]:
    if not Path(NGINX).exists():
        pytest.fail("the gateway test runs Debian's nginx: scripts/install-deploy-tools installs it (CI runs it)")
    edge = Gateway(root, [f"127.0.0.1:{api.port}" for api in apis])
    try:
        edge.start()
        yield edge
    finally:  # also when it never came up: no nginx outlives the test
        edge.stop()


@pytest.fixture(scope="module")
def gateway(apis: list[ApiProcess], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(apis, tmp_path_factory.mktemp("nginx")) as edge:
        yield edge


@pytest.fixture
def own_gateway(apis: list[ApiProcess], tmp_path: Path) -> Iterator[Gateway]:
    """A gateway for one test: one that uses up the edge's rate limit leaves the others' gateway as it was."""
    with running_gateway(apis, tmp_path / "nginx") as edge:
        yield edge


def test_requests_are_spread_over_both_api_processes(gateway: Gateway, apis: list[ApiProcess]) -> None:
    with gateway.client() as client:
        upstreams = {client.get("/health").headers["x-visionq-upstream"] for _ in range(10)}
    assert upstreams == {f"127.0.0.1:{api.port}" for api in apis}


def test_a_job_is_submitted_and_followed_over_the_websocket_through_the_gateway(gateway: Gateway) -> None:
    with gateway.client() as client:
        accepted = client.post(
            "/classify", files={"file": ("cat.jpg", cat_variants()["jpeg"])}, headers={"X-Request-ID": "edge-1"}
        )
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["x-request-id"] == "edge-1", "the request id passes through"
    job_id = accepted.json()["job_id"]

    messages = []
    with connect(f"wss://127.0.0.1:{gateway.https}/ws/{job_id}", ssl=gateway.tls) as ws:
        for message in ws:
            messages.append(json.loads(message))
    assert messages[-1]["status"] == "completed"
    assert messages[-1]["predictions"][0]["class_id"] in CAT_CLASSES


def test_an_oversized_upload_is_refused_at_the_edge(gateway: Gateway) -> None:
    with gateway.client() as client:
        refused = client.post("/classify", files={"file": ("big.jpg", b"\xff" * (12 * 1024 * 1024))})
    assert refused.status_code == 413
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "payload_too_large"
    assert "gateway" in refused.json()["detail"], "nginx answered, not the API"
    assert "x-visionq-upstream" not in refused.headers or not refused.headers["x-visionq-upstream"]


def test_plain_http_is_redirected_to_https(gateway: Gateway) -> None:
    answer = httpx.get(f"http://127.0.0.1:{gateway.http}/health")
    assert answer.status_code == 308
    assert answer.headers["location"].startswith("https://")


def test_the_edge_rate_limit_answers_429_with_retry_after(own_gateway: Gateway) -> None:
    with own_gateway.client() as client, ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: client.get("/health"), range(BURST)))
    statuses = [answer.status_code for answer in answers]
    assert 200 in statuses
    assert 429 in statuses
    limited = answers[statuses.index(429)]
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["code"] == "rate_limited"
    assert limited.headers["retry-after"] == "1"
