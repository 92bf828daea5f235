"""The throughput suite: the in-process ceiling and the real service, measured in ONE run on this machine.

    .venv/bin/python bench/throughput.py [--model efficientnet-lite0] [--fast-model efficientnet-lite0-int8]
                                         [--seconds 10] [--jobs 300] [--threads 8]

On the same ~500 KB 1600x1600 JPEG photo, it measures:
- the in-process ceiling: `run_classification` (decode, preprocess, the model, top-5) with no service
  around it, in one single-threaded process per core, images/s;
- the service end to end (a private redis-server, `visionq worker`, `visionq api`): each job submitted over
  HTTP and followed to its result by the SDK (WebSocket), jobs/s at saturation with 1 and with 2 worker
  processes, and the ratio to the ceiling;
- latency p50/p95/p99 from submit to result at 10 jobs/s and at 80% of saturation (open loop);
- the service's own CPU per job: CPU seconds of Redis, the API and the workers, per job, less the ceiling's
  CPU per image (decode and inference);
- the same saturation with a `threads` worker running `--threads` jobs at once, whose jobs share calls of the
  model (dynamic batching), and the mean images per call;
- the reduced-precision build (`--fast-model`): its ceiling and the service's saturation with it;
and writes the table to stdout, `var/bench/throughput.json`, and `var/bench/latency.png` (latency against
offered load). Timings on a shared machine are noisy: compare the figures of one run with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import redis
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from factories import chelsea
from integration.stack import ApiProcess, WorkerProcess
from visionq.client import AsyncClient
from visionq.embedded import EmbeddedRedis
from visionq.inference.catalog import build_catalog
from visionq.inference.quantize import int8_unsupported
from visionq.inference.spec import Precision
from visionq.settings import BuiltinRuntime, Settings

OUT = Path("var/bench")


def photo() -> bytes:
    """A ~500 KB 1600x1600 photo JPEG: the cat, enlarged, with sensor-like noise (fixed seed)."""
    enlarged = np.asarray(chelsea().resize((1600, 1600), Image.Resampling.BICUBIC), dtype=np.float32)
    noisy = enlarged + np.random.default_rng(1).normal(0.0, 4.6, enlarged.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# --- the in-process ceiling ------------------------------------------------------------------------


def _classify_for(args: tuple[str, bytes, float, Any]) -> tuple[int, float]:
    """One process: classify the photo over and over for `seconds`; (images, CPU seconds)."""
    model, image, seconds, start = args
    from visionq.inference.catalog import build_catalog
    from visionq.inference.registry import ModelRegistry
    from visionq.worker.pipeline import run_classification

    settings = Settings()
    catalog = build_catalog(settings)
    spec = catalog.resolve(model)
    onnx = settings.builtin_runtime is BuiltinRuntime.ONNX  # as the workers run it (VISIONQ_BUILTIN_RUNTIME)
    classifier = ModelRegistry(catalog, threads=1, cache=settings.model_cache, builtin_onnx=onnx).get(spec)
    labels = catalog.labels(spec)

    def once() -> None:
        run_classification(image, classifier=classifier, labels=labels, top=5, max_pixels=40_000_000, report=id)

    once()  # warm
    start.wait()
    cpu, ends, images = time.process_time(), time.perf_counter() + seconds, 0
    while time.perf_counter() < ends:
        once()
        images += 1
    return images, time.process_time() - cpu


def ceiling(model: str, image: bytes, processes: int, seconds: float) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Barrier(processes)
        with context.Pool(processes) as pool:
            runs = pool.map(_classify_for, [(model, image, seconds, start)] * processes)
    images, cpu = sum(r[0] for r in runs), sum(r[1] for r in runs)
    return {"images_per_s": images / seconds, "cpu_per_image_ms": 1000 * cpu / images, "processes": processes}


# --- the service -------------------------------------------------------------------------------------


@dataclass
class Service:
    root: Path
    concurrency: int
    pool: str = "prefork"
    warm: tuple[str, ...] = ("latest",)
    redis: EmbeddedRedis = field(init=False)
    worker: WorkerProcess = field(init=False)
    api: ApiProcess = field(init=False)

    def __post_init__(self) -> None:
        self.redis = EmbeddedRedis(self.root / "redis", persistent=True)
        settings = Settings(
            redis_url=self.redis.url,
            data_dir=self.root / "data",
            worker_concurrency=self.concurrency,
            worker_pool=self.pool,
            warm_models=list(self.warm),
            log_level="WARNING",
            rate_limit_ip=0,
            rate_limit_user=0,
        )
        self.worker, self.api = WorkerProcess(settings), ApiProcess(settings)

    def processes(self) -> dict[str, list[psutil.Process]]:
        """The service's processes by role: Redis, the API, the worker's main process and its pool."""
        assert self.worker.process is not None
        assert self.api.process is not None
        assert self.redis.pid is not None
        worker = psutil.Process(self.worker.process.pid)
        return {
            "redis": [psutil.Process(self.redis.pid)],
            "api": [psutil.Process(self.api.process.pid)],
            "worker main": [worker],
            "worker pool": worker.children(recursive=True),
        }


@contextmanager
def running(
    root: Path, concurrency: int, pool: str = "prefork", warm: tuple[str, ...] = ("latest",)
) -> Iterator[Service]:
    service = Service(root, concurrency, pool, warm)
    with contextlib.ExitStack() as started:  # what started is stopped, even when a later start fails
        for part in (service.redis, service.worker, service.api):
            part.start()
            started.callback(part.stop)
        yield service


def cpu_seconds(roles: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """CPU seconds (user + system) each role's processes have used so far."""
    used: dict[str, float] = {}
    for role, processes in roles.items():
        used[role] = 0.0
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                used[role] += times.user + times.system
    return used


def redis_stats(service: Service) -> dict[str, int]:
    """Redis's counters of commands and network bytes so far."""
    client = redis.Redis.from_url(service.redis.url)
    try:
        stats = client.info("stats")
    finally:
        client.close()
    return {
        name: int(stats[name])
        for name in ("total_commands_processed", "total_net_input_bytes", "total_net_output_bytes")
    }


async def _one(client: AsyncClient, image: bytes, model: str) -> float:
    started = time.perf_counter()
    outcome = await client.classify(image, model=model, timeout=120)
    if outcome.status != "completed":
        raise RuntimeError(f"a job ended {outcome.status}")
    return time.perf_counter() - started


async def saturate(url: str, image: bytes, model: str, jobs: int, in_flight: int) -> tuple[float, list[float]]:
    """Closed loop: `in_flight` clients, each submitting the next job as soon as its last one is done."""
    latencies: list[float] = []
    remaining = iter(range(jobs))
    async with AsyncClient(url) as client:

        async def loop() -> None:
            for _ in remaining:
                latencies.append(await _one(client, image, model))

        await _one(client, image, model)  # warm the connection and the worker
        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(in_flight)))
        return jobs / (time.perf_counter() - started), latencies


async def offered(url: str, image: bytes, model: str, rate: float, seconds: float) -> list[float]:
    """Open loop: a job every 1/rate s for `seconds`, whatever the service does; their latencies."""
    async with AsyncClient(url) as client:
        tasks: list[asyncio.Task[float]] = []
        started = time.perf_counter()
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(_one(client, image, model)))
        return list(await asyncio.gather(*tasks))


def percentiles(latencies: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50_ms": 1000 * cuts[49], "p95_ms": 1000 * cuts[94], "p99_ms": 1000 * cuts[98], "jobs": len(latencies)}


# --- the run -----------------------------------------------------------------------------------------


def batch_stats(service: Service, model: str) -> tuple[int, int]:
    """The cluster's (calls of `model`, images in them) so far."""
    from visionq.inference.catalog import build_catalog
    from visionq.jobs import keys

    ref = build_catalog(Settings()).resolve(model).ref
    client = redis.Redis.from_url(service.redis.url, decode_responses=True)
    try:
        calls, images = client.hmget(keys.inference_stats(ref), ["batch:count", "batch:sum"])
    finally:
        client.close()
    return int(calls or 0), int(images or 0)


def measure(service: Service, image: bytes, model: str, jobs: int, in_flight: int) -> dict[str, Any]:
    """Saturate the service (closed loop) and account for what each job cost: CPU by role, Redis, batches."""
    watched = service.processes()
    before, client_before, redis_before = cpu_seconds(watched), time.process_time(), redis_stats(service)
    batches_before = batch_stats(service, model)
    rate, latencies = asyncio.run(saturate(service.api.url, image, model, jobs, in_flight))
    after, client = cpu_seconds(watched), time.process_time() - client_before
    by_role = {role: 1000 * (after[role] - before[role]) / jobs for role in after}
    redis_after, batches_after = redis_stats(service), batch_stats(service, model)
    calls = batches_after[0] - batches_before[0]
    return {
        "jobs_per_s": rate,
        "redis_per_job": {k: (redis_after[k] - redis_before[k]) / jobs for k in redis_after},
        "cpu_per_job_ms": sum(by_role.values()),
        "cpu_per_job_by_role_ms": by_role,
        "client_cpu_per_job_ms": 1000 * client / jobs,
        "mean_batch": (batches_after[1] - batches_before[1]) / calls if calls else 0.0,
        **percentiles(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--fast-model", default="efficientnet-lite0-int8", help="the reduced-precision build")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each ceiling and open-loop run")
    parser.add_argument("--jobs", type=int, default=300, help="jobs of each saturation run")
    parser.add_argument("--threads", type=int, default=8, help="jobs at once of the threads-pool (batching) run")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    image = photo()
    runtime = Settings().builtin_runtime.value
    report: dict[str, Any] = {"model": args.model, "runtime": runtime, "photo_bytes": len(image), "cores": cores}

    report["ceiling"] = ceiling(args.model, image, cores, args.seconds)
    fast: dict[str, Any] = {"model": args.fast_model}
    int8 = build_catalog(Settings()).resolve(args.fast_model).precision is Precision.INT8
    if int8 and (why := int8_unsupported()):
        fast["skipped"] = why  # refused on this CPU (docs/models.md)
    else:
        fast["ceiling"] = ceiling(args.fast_model, image, cores, args.seconds)
    with tempfile.TemporaryDirectory() as root:
        saturation: dict[int, dict[str, Any]] = {}
        for processes in sorted({1, cores}):
            with running(Path(root) / f"w{processes}", processes) as service:
                saturation[processes] = measure(service, image, args.model, args.jobs, 4 * processes)
                if processes == cores:
                    top = saturation[processes]["jobs_per_s"]
                    curve = []
                    for load in (10.0, 0.5 * top, 0.8 * top, top):
                        observed = asyncio.run(offered(service.api.url, image, args.model, load, args.seconds))
                        curve.append({"offered_per_s": load, **percentiles(observed)})
        with running(Path(root) / "threads", args.threads, pool="threads") as service:
            report["batching"] = {
                "threads": args.threads,
                **measure(service, image, args.model, args.jobs, 2 * args.threads),
            }
        if "ceiling" in fast:
            with running(Path(root) / "fast", cores, warm=("latest", args.fast_model)) as service:
                fast["service"] = measure(service, image, args.fast_model, args.jobs, 4 * cores)
                fast["ratio"] = fast["service"]["jobs_per_s"] / fast["ceiling"]["images_per_s"]
        report["saturation"] = saturation
        report["latency"] = curve
        report["fast"] = fast

    full = saturation[cores]
    report["ratio"] = full["jobs_per_s"] / report["ceiling"]["images_per_s"]
    report["overhead_cpu_per_job_ms"] = full["cpu_per_job_ms"] - report["ceiling"]["cpu_per_image_ms"]
    # What the cores would carry with the load generator on another machine: all of them for the service.
    report["ratio_client_elsewhere"] = (1000 * cores / full["cpu_per_job_ms"]) / report["ceiling"]["images_per_s"]
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "throughput.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    _plot(curve, OUT / "latency.png", args.model)
    sys.stdout.write(_table(report))


def _table(report: dict[str, Any]) -> str:
    ceiling_, full = report["ceiling"], report["saturation"][report["cores"]]
    rows = [
        ("photo", f"{report['photo_bytes'] / 1024:.0f} KiB JPEG, 1600x1600"),
        ("model", f"{report['model']} on {report['runtime']}"),
        ("in-process ceiling", f"{ceiling_['images_per_s']:.1f} images/s ({ceiling_['processes']} processes)"),
        *(
            (f"service, {n} worker process{'es' if n > 1 else ''}", f"{s['jobs_per_s']:.1f} jobs/s")
            for n, s in sorted(report["saturation"].items())
        ),
        ("ratio service / ceiling", f"{report['ratio']:.2f}"),
        (
            "  estimated, client elsewhere",
            f"{report['ratio_client_elsewhere']:.2f} (the cores / the service's CPU per job, against the ceiling)",
        ),
        (
            f"service, threads pool ({report['batching']['threads']} jobs at once)",
            f"{report['batching']['jobs_per_s']:.1f} jobs/s, {report['batching']['mean_batch']:.1f} images per "
            "call of the model (dynamic batching)",
        ),
        (f"reduced precision: {report['fast']['model']}", _fast(report["fast"])),
        *(
            (
                f"latency at {point['offered_per_s']:.1f} jobs/s",
                f"p50 {point['p50_ms']:.0f} ms, p95 {point['p95_ms']:.0f} ms, p99 {point['p99_ms']:.0f} ms",
            )
            for point in report["latency"]
        ),
        ("CPU per job, service", f"{full['cpu_per_job_ms']:.1f} ms (Redis + API + workers)"),
        *((f"  {role}", f"{ms:.1f} ms") for role, ms in full["cpu_per_job_by_role_ms"].items()),
        ("CPU per job, the client", f"{full['client_cpu_per_job_ms']:.1f} ms (the SDK, on the same cores)"),
        ("CPU per image, decode + inference", f"{ceiling_['cpu_per_image_ms']:.1f} ms"),
        (
            "Redis per job",
            f"{full['redis_per_job']['total_commands_processed']:.0f} commands, "
            f"{full['redis_per_job']['total_net_input_bytes'] / 1024:.0f} KiB in, "
            f"{full['redis_per_job']['total_net_output_bytes'] / 1024:.0f} KiB out",
        ),
        ("service overhead", f"{report['overhead_cpu_per_job_ms']:.1f} ms CPU per job"),
    ]
    width = max(len(name) for name, _ in rows)
    return "".join(f"{name:<{width}}  {value}\n" for name, value in rows)


def _fast(fast: dict[str, Any]) -> str:
    if "skipped" in fast:
        return f"not measured: {fast['skipped']}"
    return (
        f"ceiling {fast['ceiling']['images_per_s']:.1f} images/s, service {fast['service']['jobs_per_s']:.1f} jobs/s "
        f"(ratio {fast['ratio']:.2f})"
    )


def _plot(curve: list[dict[str, float]], path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = [point["offered_per_s"] for point in curve]
    figure, axes = plt.subplots(figsize=(6, 4))
    for key, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
        axes.plot(loads, [point[key] for point in curve], marker="o", label=label)
    axes.set_xlabel("offered load, jobs/s")
    axes.set_ylabel("submit → result, ms")
    axes.set_yscale("log")
    axes.set_title(f"visionq, {model}, {os.cpu_count()} cores")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
