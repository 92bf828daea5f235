"""The stack's floor: what the parts visionq is built of cost per job on their own, against `visionq serve`.

    .venv/bin/python bench/floor.py [--jobs 400] [--passes 2] [--concurrency 32] [--model efficientnet-lite0]

Issue 12 asks the service for 0.80 of the in-process ceiling and 5 ms of CPU per job outside the model. This bench
asks what those targets leave to visionq: the same pinned layout and load as `throughput.py` (service and ceiling
on core 0, the load generator on core 1, each job a POST of the 498 KiB photo followed to its result on
`/ws/{id}`), run against a *floor service* made of the same parts doing only what a job cannot do without:

- the API: FastAPI on uvicorn (uvloop, httptools, websockets-sansio, as visionq's). `POST /classify` streams the
  body through python-multipart, writes the image to a folder, and in one pipeline writes the job's hash and
  LPUSHes its Celery message (visionq's own wire format, `jobs/queue.py`); it answers 202. `/ws/{id}` reads the
  job's hash, sends it, forwards what is published on the job's channel, and closes after the result. One pattern
  subscription per process, to every job's channel;
- Redis: a redis-server as `visionq serve` embeds it (append-only file, fsync every second, a Unix socket);
- the worker: a Celery worker (`solo` pool, `acks_late`, prefetch 1, kombu's Redis transport), whose task reads
  the image, runs the worker's own `run_classification` (as the ceiling does), publishes `initializing` as it
  starts and, in one pipeline at the end, stores the result and publishes the four other stages and the result
  (the seven messages a followed visionq job gets), then deletes the image.

Left out, all that visionq does beyond that: authentication, rate limits, the upload's checks (its header, its
hash), idempotency, priorities and queue positions, deadlines, cancellation, exactly-one-run claims, stage and
retry bookkeeping, circuit breakers, the result cache, receipts, heartbeats, metrics, access logs, the archive.
So the floor is a lower bound of any service of these parts, not a service: what it costs outside the model is
the part of the 5 ms target that the parts themselves take.

The floor service and `visionq serve` alternate with the ceiling in one run (ceiling, visionq, floor, ceiling, ...),
each service started fresh for its two windows: jobs followed on their WebSocket (the headline), then one request
per job that answers with the result (`Prefer: wait`, the SDK's way without a progress callback; the floor holds
the upload until the result is published). `floor.py serve` and `floor.py worker` are the floor's own processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

#: The Celery queue (one Redis list) and task of the floor.
QUEUE = "floor"
TASK = "floor.classify"
#: The key the floor's worker sets once it consumes, which makes `/health/ready` say ok.
READY_KEY = "floor:ready"
#: The two clients of each service's windows: each job followed on its WebSocket (the headline), and the result
#: in the upload's answer (`Prefer: wait`, what visionq's SDK does without a progress callback).
KINDS = ("", ", result in the answer")
#: The stages the worker publishes with its result, after `initializing`.
LAST_STAGES = ("preprocessing", "inference", "postprocessing", "completed")
#: Seconds a `Prefer: wait` upload is held at most.
WAIT_LIMIT = 60.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _status(fields: dict[str, str], **changes: Any) -> bytes:
    """A status body as the floor's messages carry it, from the job's hash."""
    return orjson.dumps({**fields, "progress": int(changes.pop("progress", fields.get("progress", 0))), **changes})


# --- the floor's API ------------------------------------------------------------------------------------------


def create_app(redis_url: str, images: Path) -> Any:
    from redis.asyncio import Redis

    from visionq.jobs.queue import task_message

    redis = Redis.from_url(redis_url)
    watchers: dict[str, asyncio.Queue[bytes]] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        listening = asyncio.create_task(listen(redis, watchers))
        yield
        listening.cancel()

    app = FastAPI(lifespan=lifespan)

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"status": "ok" if await redis.exists(READY_KEY) else "down"})

    @app.post("/classify")
    async def classify(request: Request) -> Response:
        fields = await read_form(request)
        job_id = str(uuid.uuid4())
        (images / job_id).write_bytes(fields["file"])
        created = _now()
        record: dict[Any, str] = {
            "job_id": job_id,
            "status": "pending",
            "stage": "queued",
            "progress": "0",
            "created_at": created,
            "updated_at": created,
            "worker_id": "",
            "attempts": "0",
            "model_version": fields.get("model_version", bytearray(b"efficientnet-lite0")).decode() + "@1",
            "priority": "normal",
        }
        # `Prefer: wait` (what visionq's SDK sends): the answer is the result, once it is published.
        waited: asyncio.Queue[bytes] | None = None
        if "wait=" in request.headers.get("prefer", ""):
            waited = watchers[job_id] = asyncio.Queue()
        try:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.hset(f"job:{job_id}", mapping=record)
                pipe.lpush(QUEUE, task_message(job_id, queue=QUEUE, broker_priority=0, task=TASK))
                await pipe.execute()
            if waited is not None:
                return Response(await until_result(waited), media_type="application/json")
        finally:
            if waited is not None:
                del watchers[job_id]
        links = {"status": f"/status/{job_id}", "result": f"/result/{job_id}", "websocket": f"/ws/{job_id}"}
        body = {"job_id": job_id, "status": "pending", "created_at": created, "estimated_completion": None}
        return JSONResponse({**body, "model_version": record["model_version"], "links": links}, status_code=202)

    async def watch(websocket: Any) -> None:  # Starlette takes a plain function as a WebSocket endpoint
        await follow(redis, watchers, websocket)

    app.router.add_websocket_route("/ws/{job_id}", watch)
    return app


async def listen(redis: Any, watchers: dict[str, asyncio.Queue[bytes]]) -> None:
    """Every job's messages (one pattern subscription), each handed to its job's watcher in this process."""
    pubsub = redis.pubsub()
    await pubsub.psubscribe("job:*:events")
    async for message in pubsub.listen():
        if message["type"] == "pmessage":
            queue = watchers.get(message["channel"].decode()[4:-7])
            if queue is not None:
                queue.put_nowait(message["data"])


async def follow(redis: Any, watchers: dict[str, asyncio.Queue[bytes]], websocket: Any) -> None:
    """`/ws/{id}`: the job's hash, then what is published on its channel until the result."""
    job_id = websocket.path_params["job_id"]
    queue = watchers[job_id] = asyncio.Queue()
    try:
        await websocket.accept()
        fields = {k.decode(): v.decode() for k, v in (await redis.hgetall(f"job:{job_id}")).items()}
        if not fields:
            await websocket.close(4404)
            return
        await websocket.send_text(_status(fields).decode())
        if fields["status"] == "completed":  # ended before the watch began
            result = await redis.get(f"job:{job_id}:result")
            await websocket.send_text(result.decode() if result else "{}")
        else:
            while b'"predictions"' not in (message := await queue.get()):
                await websocket.send_text(message.decode())
            await websocket.send_text(message.decode())
        await websocket.close(1000)
    finally:
        del watchers[job_id]


async def until_result(updates: asyncio.Queue[bytes]) -> bytes:
    """The result, the last of a job's published messages."""
    async with asyncio.timeout(WAIT_LIMIT):
        while b'"predictions"' not in (message := await updates.get()):
            pass
    return message


async def read_form(request: Any) -> dict[str, bytearray]:
    """The multipart form's parts by name, streamed through python-multipart as visionq's reader does."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(request.headers["content-type"])
    fields: dict[str, bytearray] = {}
    current = [""]
    header = [bytearray(), bytearray()]

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        if bytes(header[0]).lower() == b"content-disposition":
            current[0] = parse_options_header(bytes(header[1]))[1].get(b"name", b"").decode()
            fields[current[0]] = bytearray()
        header[0], header[1] = bytearray(), bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        fields[current[0]] += data[start:end]

    callbacks = {
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
    }
    parser = MultipartParser(options[b"boundary"], callbacks=callbacks)  # type: ignore[arg-type]
    async for chunk in request.stream():
        parser.write(chunk)
    parser.finalize()
    return fields


# --- the floor's worker ---------------------------------------------------------------------------------------


def run_worker(redis_url: str, images: Path, model: str) -> None:
    from celery import Celery
    from celery.signals import worker_ready
    from redis import Redis

    from visionq.inference.catalog import build_catalog
    from visionq.inference.registry import ModelRegistry
    from visionq.settings import BuiltinRuntime, Settings
    from visionq.worker.pipeline import run_classification

    settings = Settings()
    catalog = build_catalog(settings)
    spec = catalog.resolve(model)
    onnx = settings.builtin_runtime is BuiltinRuntime.ONNX
    classifier = ModelRegistry(catalog, threads=1, cache=settings.model_cache, builtin_onnx=onnx).get(spec)
    labels = catalog.labels(spec)
    redis = Redis.from_url(redis_url, decode_responses=True)
    worker_id = f"floor:{os.getpid()}"
    broker = "redis+socket://" + redis_url.removeprefix("unix://").split("?")[0]
    app = Celery("floor", broker=broker)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )

    @app.task(name=TASK, acks_late=True)
    def classify(job_id: str) -> None:
        picked_up = time.perf_counter()
        key, channel = f"job:{job_id}", f"job:{job_id}:events"
        fields: dict[str, str] = redis.hgetall(key)  # type: ignore[assignment]  # decode_responses: str
        running: dict[Any, str] = {
            "status": "processing",
            "worker_id": worker_id,
            "attempts": "1",
            "updated_at": _now(),
        }
        fields |= running
        with redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={**running, "stage": "initializing"})
            pipe.publish(channel, _status(fields, stage="initializing"))
            pipe.execute()
        image = (images / job_id).read_bytes()
        outcome = run_classification(
            image,
            classifier=classifier,
            labels=labels,
            top=5,
            max_pixels=settings.max_pixels,
            report=id,
            draft=settings.jpeg_draft,
        )
        completed = _now()
        created = datetime.fromisoformat(fields["created_at"]).timestamp()
        result = orjson.dumps(
            {
                "job_id": job_id,
                "status": "completed",
                "predictions": [p.model_dump() for p in outcome.predictions],
                "confidence_score": outcome.predictions[0].confidence,
                "processing_time": round(time.perf_counter() - picked_up, 6),
                "model_version": fields["model_version"],
                "created_at": fields["created_at"],
                "completed_at": completed,
                "metadata": {
                    "image": outcome.image.model_dump(),
                    "queue_time": 0.0,
                    "total_time": round(time.time() - created, 6),
                },
            }
        )
        with redis.pipeline(transaction=False) as pipe:
            done: dict[Any, str] = {
                "status": "completed",
                "stage": "completed",
                "progress": "100",
                "updated_at": completed,
            }
            pipe.hset(key, mapping=done)
            pipe.set(f"{key}:result", result)
            for progress, stage in zip((10, 40, 90, 100), LAST_STAGES, strict=True):
                status = "completed" if stage == "completed" else "processing"
                pipe.publish(channel, _status(fields, stage=stage, progress=progress, status=status))
            pipe.publish(channel, result)
            pipe.execute()
        (images / job_id).unlink()

    @worker_ready.connect
    def _ready(**_: Any) -> None:
        redis.set(READY_KEY, worker_id)

    worker = app.Worker(
        queues=[QUEUE],
        pool_cls="solo",
        concurrency=1,
        loglevel="WARNING",
        hostname=f"floor-{os.getpid()}@localhost",
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        quiet=True,
    )
    worker.start()


def serve(host: str, port: int, model: str) -> None:
    """The floor service: Redis and the worker as children, the API in this process (the roles of
    `visionq serve`'s processes, which `bench/pinned.py` reads)."""
    import subprocess

    import uvicorn

    from visionq.embedded import EmbeddedRedis

    root = Path(tempfile.mkdtemp(prefix="visionq-floor-"))
    images = root / "images"
    images.mkdir()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        redis = cleanup.enter_context(EmbeddedRedis(root / "redis", unix_socket=True))
        command = [sys.executable, __file__, "worker", redis.url, str(images), model]
        worker = subprocess.Popen(command)
        try:
            uvicorn.run(
                create_app(redis.url, images),
                host=host,
                port=port,
                loop="uvloop",
                http="httptools",
                ws="websockets-sansio",
                ws_per_message_deflate=False,
                log_level="warning",
                access_log=False,
            )
        finally:
            worker.terminate()
            worker.wait()


# --- the bench ----------------------------------------------------------------------------------------------


def bench(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The run: the ceiling, then each service's windows, in turns; `root` holds the photo, data and logs."""
    from ceiling import ceiling
    from pinned import PinnedService
    from throughput import _pin_this_process, _prepare, layout_service_env, photo, window

    _pin_this_process(args.client_core)
    image = photo()
    env = layout_service_env(root, args)
    _prepare(args.model, env)
    path = root / "photo.jpg"
    path.write_bytes(image)
    pinned = {"model": args.model, "core": args.service_core, "env": env, "image": path}
    commands = {
        "visionq": [sys.executable, "-m", "visionq", "serve"],
        "floor": [sys.executable, __file__, "serve", "--model", args.model],
    }

    ceilings = [ceiling(processes=args.processes, images=args.ceiling_images, **pinned)]
    windows: dict[str, list[dict[str, Any]]] = {f"{name}{kind}": [] for name in commands for kind in KINDS}
    for _ in range(args.passes):
        for name, command in commands.items():
            log = root / f"{name}.log"
            with PinnedService(env, core=args.service_core, log=log, command=command) as service:
                for kind in KINDS:
                    figures, _ = asyncio.run(window(service, image, args, waited=bool(kind)))
                    windows[f"{name}{kind}"].append(figures)
        ceilings.append(ceiling(processes=args.processes, images=args.ceiling_images, **pinned))
    ceiling_rate = statistics.mean(c["images_per_s"] for c in ceilings)
    ceiling_cpu = statistics.mean(c["cpu_per_image_ms"] for c in ceilings)
    report: dict[str, Any] = {"ceiling": ceilings, "ceiling_images_per_s": ceiling_rate, "ceiling_cpu_ms": ceiling_cpu}
    for name, runs in windows.items():
        rate = statistics.mean(r["jobs_per_s"] for r in runs)
        cpu = statistics.mean(r["service_cpu_per_job_ms"] for r in runs)
        roles = {role: statistics.mean(r["cpu_per_job_ms"][role] for r in runs) for role in runs[0]["cpu_per_job_ms"]}
        report[name] = {
            "windows": runs,
            "jobs_per_s": rate,
            "ratio": rate / ceiling_rate,
            "each_ratio": [r["jobs_per_s"] / ceiling_rate for r in runs],
            "outside_model_ms": cpu - ceiling_cpu,
            "cpu_per_job_ms": roles,
            "redis_per_job": runs[-1]["redis_per_job"],
        }
    return report


def table(report: dict[str, Any]) -> str:
    rates = ", ".join(f"{c['images_per_s']:.1f}" for c in report["ceiling"])
    lines = [
        f"ceiling: {rates} images/s "
        f"(mean {report['ceiling_images_per_s']:.1f}), {report['ceiling_cpu_ms']:.1f} ms CPU per image"
    ]
    for name in (f"{name}{kind}" for name in ("visionq", "floor") for kind in KINDS):
        figures = report[name]
        roles = ", ".join(f"{role} {ms:.1f}" for role, ms in figures["cpu_per_job_ms"].items() if ms >= 0.05)
        redis = figures["redis_per_job"]
        traffic = (redis["total_net_input_bytes"] + redis["total_net_output_bytes"]) / 1024
        lines += [
            f"{name}: {figures['jobs_per_s']:.1f} jobs/s, ratio {figures['ratio']:.2f} "
            f"({', '.join(f'{r:.2f}' for r in figures['each_ratio'])})",
            f"  outside the model {figures['outside_model_ms']:.1f} ms per job; CPU per job by role: {roles} ms",
            f"  Redis per job: {redis['total_commands_processed']:.0f} commands, {traffic:.1f} KiB",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    from throughput import add_layout_arguments, add_window_arguments

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("bench", help="the comparison (the default)")
    add_layout_arguments(run)
    add_window_arguments(run, jobs=400, warmup=64)
    run.add_argument("--out", type=Path, default=Path("var/bench/floor.json"))
    server = commands.add_parser("serve", help="the floor service (the bench starts it)")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8000)
    server.add_argument("--model", default="efficientnet-lite0")
    worker = commands.add_parser("worker", help="the floor's worker (its service starts it)")
    worker.add_argument("redis_url")
    worker.add_argument("images", type=Path)
    worker.add_argument("model")
    args = parser.parse_args(sys.argv[1:] or ["bench"])
    if args.command == "serve":
        serve(args.host, args.port, args.model)
    elif args.command == "worker":
        run_worker(args.redis_url, args.images, args.model)
    else:
        with tempfile.TemporaryDirectory(prefix="visionq-floor-bench-") as root:
            report = bench(args, Path(root))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        sys.stdout.write(table(report))


if __name__ == "__main__":
    main()
