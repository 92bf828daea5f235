"""What one request costs the API process in CPU, by kind, against the same transport with no application.

    .venv/bin/python bench/api_costs.py [--requests 600] [--paced 400] [--rate 30]

The pinned service of `throughput.py` (everything on core 0, this client on core 1); each line is the API
process's CPU (user + system, from /proc) over a run of requests, divided by the requests:
- `GET /health` and `GET /status/<unknown id>` (404): the HTTP stack and the middleware, without and with one
  Redis round trip;
- `POST /classify` of the bench's 498 KiB photo, back to back (8 at once), and then one at a time at `--rate`
  per second (the pace of a service at saturation): the same work, met by caches that the worker's inference on
  the same core has cooled between requests;
- a WebSocket on a job that has already completed (its status and its result, then the close);
- the floor: a bare uvicorn (no framework, no Redis) pinned the same way, reading the same POST body and
  answering a WebSocket with five status-sized messages.

It answers "how much of the API's CPU per job is the transport, how much the application, how much the pace".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
from pinned import PinnedService
from throughput import _pin_this_process, add_layout_arguments, layout_service_env, photo
from websockets.asyncio.client import connect

from visionq.embedded import free_port

#: Requests in flight for the back-to-back runs.
CONCURRENCY = 8
#: Seconds the bare server may take to listen.
BARE_START_TIMEOUT = 30.0
#: A status body's size, for the bare WebSocket's messages.
STATUS = json.dumps({"job_id": "0" * 36, "status": "processing", "progress": 50, "stage": "inference",
                     "created_at": "2026-12-07T00:00:00.000Z", "updated_at": "2026-12-07T00:00:00.000Z",
                     "worker_id": "host:1", "attempts": 1, "model_version": "efficientnet-lite0@1",
                     "priority": "normal"})  # fmt: skip

BARE_APP = f"""
import sys, uvicorn
STATUS = {STATUS!r}
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({{"type": "lifespan.startup.complete"}})
        await send({{"type": "lifespan.shutdown.complete"}})
    elif scope["type"] == "websocket":
        await receive()
        await send({{"type": "websocket.accept"}})
        for _ in range(5):
            await send({{"type": "websocket.send", "text": STATUS}})
        await send({{"type": "websocket.close", "code": 1000}})
    else:
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(b"content-type", b"application/json")]
        await send({{"type": "http.response.start", "status": 202, "headers": headers}})
        await send({{"type": "http.response.body", "body": STATUS.encode()}})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, access_log=False,
            ws="websockets-sansio", ws_per_message_deflate=False)
"""

Request = Callable[[httpx.AsyncClient], Coroutine[Any, Any, object]]


def cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def back_to_back(base: str, process: psutil.Process, request: Request, requests: int) -> float:
    """ms of `process`'s CPU per request, `CONCURRENCY` requests in flight (after a warm-up)."""
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=CONCURRENCY)) as client:

        async def loop(count: int) -> None:
            for _ in range(count):
                await request(client)

        await loop(20)
        before = cpu(process)
        await asyncio.gather(*(loop(requests // CONCURRENCY) for _ in range(CONCURRENCY)))
        return 1000 * (cpu(process) - before) / (requests // CONCURRENCY * CONCURRENCY)


async def paced(base: str, process: psutil.Process, request: Request, requests: int, rate: float) -> float:
    """ms of `process`'s CPU per request, one request every 1/`rate` s."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        await request(client)
        before, started = cpu(process), time.monotonic()
        sent: list[asyncio.Task[object]] = []
        for n in range(requests):
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            sent.append(asyncio.create_task(request(client)))
        await asyncio.gather(*sent)
        return 1000 * (cpu(process) - before) / requests


def websocket(url: str) -> Request:
    async def follow(_: httpx.AsyncClient) -> None:
        async with connect(url, compression=None) as socket:
            async for _message in socket:
                pass

    return follow


async def service_costs(service: PinnedService, image: bytes, model: str, args: argparse.Namespace) -> dict[str, float]:
    api = next(process for process, role in service._roles() if role == "api")
    files = [("file", ("photo.jpg", image, "image/jpeg"))]

    async def submit(client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/classify", files=files, data={"model_version": model}, headers={"Cache-Control": "no-cache"}
        )
        response.raise_for_status()

    async with httpx.AsyncClient(base_url=service.url, timeout=60) as client:
        done = await client.post("/classify", files=files, data={"model_version": model}, headers={"Prefer": "wait=60"})
        job_id = done.json()["job_id"]
    url, n = service.url, args.requests
    costs = {
        "GET /health": await back_to_back(url, api, lambda c: c.get("/health"), n),
        "GET /status/<unknown> (404)": await back_to_back(url, api, lambda c: c.get(f"/status/{'0' * 36}"), n),
        "WS of a completed job": await back_to_back(url, api, websocket(f"ws{url[4:]}/ws/{job_id}"), n),
        "POST /classify, back to back": await back_to_back(url, api, submit, args.paced),
    }
    # The queue drains before the paced run, which must not meet a full queue.
    await asyncio.sleep(args.paced / 20)
    costs[f"POST /classify, {args.rate:g} per second"] = await paced(url, api, submit, args.paced, args.rate)
    return costs


@contextmanager
def bare_server(core: int) -> Iterator[tuple[str, psutil.Process]]:
    """A bare uvicorn (BARE_APP) on `core`: its URL and process."""
    port = free_port()
    server = subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-c", BARE_APP, str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + BARE_START_TIMEOUT
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url, psutil.Process(server.pid)
    finally:
        server.terminate()
        server.wait()


async def bare_costs(url: str, process: psutil.Process, image: bytes, args: argparse.Namespace) -> dict[str, float]:
    files = [("file", ("photo.jpg", image, "image/jpeg"))]
    return {
        "bare uvicorn: POST of the photo": await back_to_back(
            url, process, lambda c: c.post("/", files=files), args.requests
        ),
        "bare uvicorn: WS, 5 messages": await back_to_back(url, process, websocket(f"ws{url[4:]}/"), args.requests),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_layout_arguments(parser)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--paced", type=int, default=400, help="POSTs in the paced run")
    parser.add_argument("--rate", type=float, default=30.0, help="POSTs per second in the paced run")
    args = parser.parse_args()
    _pin_this_process(args.client_core)
    root = Path(tempfile.mkdtemp(prefix="visionq-api-costs-"))
    env = layout_service_env(root, args)
    image = photo()
    with PinnedService(env, core=args.service_core, log=root / "serve.log") as service:
        costs = asyncio.run(service_costs(service, image, args.model, args))
    with bare_server(args.service_core) as (url, process):
        costs |= asyncio.run(bare_costs(url, process, image, args))
    width = max(map(len, costs))
    sys.stdout.write("".join(f"{name:{width}s} {ms:6.2f} ms CPU per request\n" for name, ms in costs.items()))


if __name__ == "__main__":
    main()
