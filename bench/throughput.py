"""The throughput benchmark in the pinned layout: the service and the in-process ceiling take turns on one core,
the load generator has another, all in ONE run.

    .venv/bin/python bench/throughput.py [--jobs 500] [--seconds 40] [--concurrency 32] [--processes 2]
                                         [--passes 2] [--parts 8] [--rate 10] [--model efficientnet-lite0] ...

- The service: `visionq serve` (the API, the worker, the callbacks worker, the embedded Redis) under
  `taskset -c 0`, with a fresh data dir, images in a folder (`VISIONQ_IMAGE_STORE=directory`) and a worker sized
  as the service sizes itself for that one core (one job at a time, in Celery's consumer: the `auto` pool), or
  `--worker-concurrency` jobs at once on one inference thread each, in its default pool or `--pool`
  (`bench/pinned.py`).
- The load generator: this process, on core 1. It submits a ~500 KB 1600x1600 JPEG over `POST /classify` and
  follows each job on `/ws/{id}`, `--concurrency` jobs in flight (`bench/load.py`).
- The ceiling: `--processes` single-threaded processes on core 0, each running the worker's `run_classification`
  (decode, preprocess, the model, top-5) with no service around it (`bench/ceiling.py`).

Ceiling and service alternate (ceiling, service, ..., ceiling: `--passes` service passes). Each service pass is a
window of `--jobs` jobs (or `--seconds`) after `--warmup` jobs, over which CPU by process role, Redis's counters
and core use are sampled. Then come the multi-image request at saturation (`--parts` images per request), one
request per job that answers with the result (`Prefer: wait`, no WebSocket: the SDK's `classify()`), the
latency at `--rate` jobs/s and at 1 job/s (followed over WebSockets, then with the result in the answer), and one
image alone on the idle core (back to back, and one per second as the 1 job/s run gets them). It prints a table and
writes `var/bench/throughput.json` (and the service's log beside it). Timings on a shared machine are noisy: compare the
figures of one run with each other. The table's head names the CPU and the interpreter (the service runs on the
Python that runs this bench: run it from a venv of another interpreter to measure that one).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from ceiling import ceiling, one_image
from load import Load, latency, offer, saturate
from pinned import PinnedService, Spent
from report import table

from factories import chelsea
from visionq.settings import Settings

#: VISIONQ_ variables of the caller's environment passed on to the service and the ceiling (how models run and
#: where their exports are cached); every other one is dropped, so a run does not depend on who starts it.
PASSED_ON = ("VISIONQ_MODEL_CACHE_DIR", "VISIONQ_BUILTIN_RUNTIME", "VISIONQ_JPEG_DRAFT")
#: Seconds `visionq prepare` may take to export and check the model (once per machine; then it is cached).
PREPARE_TIMEOUT = 900.0


def photo() -> bytes:
    """A ~500 KB 1600x1600 photo JPEG: the cat, enlarged, with sensor-like noise (fixed seed)."""
    enlarged = np.asarray(chelsea().resize((1600, 1600), Image.Resampling.BICUBIC), dtype=np.float32)
    noisy = enlarged + np.random.default_rng(1).normal(0.0, 4.6, enlarged.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def machine() -> str:
    """The CPU's model and the widest vector extension the model's kernels can use (this machine's changes from day
    to day, and with it the model's speed)."""
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    name = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))
    extensions = {"avx512_vnni": "AVX-512 VNNI", "avx512f": "AVX-512", "avx2": "AVX2"}
    widest = next((label for flag, label in extensions.items() if flag in flags), "no AVX2")
    return f"{name}, {widest}, {os.cpu_count()} CPUs"


def interpreter() -> str:
    """The Python that runs the service (this bench's) and whether it runs from a shared libpython. Its build
    matters (docs/performance.md, "The interpreter"): pyenv's default one (a shared libpython, no profile-guided or
    link-time optimisation) runs Python code a third slower than a distribution's."""
    maps = Path("/proc/self/maps")
    shared = " with a shared libpython" if maps.exists() and "libpython" in maps.read_text() else ""
    return f"{platform.python_version()} ({sys.executable}{shared})"


def service_env(root: Path, args: argparse.Namespace) -> dict[str, str]:
    """The environment of the service and of the ceiling processes."""
    kept = {name: value for name, value in os.environ.items() if not name.startswith("VISIONQ_") or name in PASSED_ON}
    return (
        kept
        | {
            "VISIONQ_DATA_DIR": str(root / "data"),
            "VISIONQ_IMAGE_STORE": "directory",
            "VISIONQ_IMAGE_DIR": str(root / "images"),
            "VISIONQ_DEFAULT_MODEL": args.model,
            "VISIONQ_INFERENCE_THREADS": "1",
            "VISIONQ_AUTH": "off",
            "VISIONQ_RATE_LIMIT_IP": "0",
            "VISIONQ_RATE_LIMIT_USER": "0",
            "VISIONQ_LOG_LEVEL": args.log_level,
            # Every job sends the same photo: each must run, not be answered from the first's result.
            "VISIONQ_RESULT_CACHE": "false",
        }
        | ({"VISIONQ_WORKER_CONCURRENCY": str(args.worker_concurrency)} if args.worker_concurrency else {})
        | ({"VISIONQ_WORKER_POOL": args.pool} if args.pool else {})
        | ({"VISIONQ_BROKER_URL": args.broker} if args.broker else {})
    )


def add_layout_arguments(parser: argparse.ArgumentParser) -> None:
    """The pinned layout's options, for every bench that starts the service this way: the model, the service's
    core and the load generator's, and how the worker runs its jobs."""
    add = parser.add_argument
    add("--model", default="efficientnet-lite0", help="the model of every job and of the ceiling")
    add("--service-core", type=int, default=0)
    add("--client-core", type=int, default=1)
    add("--worker-concurrency", type=int, help="the worker's jobs at once (default: the service's own sizing)")
    add(
        "--pool",
        choices=("auto", "threads", "prefork", "solo"),
        help="the worker's Celery pool (default: the service's)",
    )
    # WARNING by default: figures comparable with the runs before this option (docs/performance.md measures INFO's
    # cost, the service's own default).
    add("--log-level", default="WARNING", help="the service's VISIONQ_LOG_LEVEL")


def layout_service_env(root: Path, args: argparse.Namespace) -> dict[str, str]:
    """`service_env` for a bench with `add_layout_arguments`'s options and no broker apart."""
    return service_env(root, argparse.Namespace(**{"broker": None, **vars(args)}))


def broker_process(url: str | None) -> int | None:
    """The process listening on a broker URL's port on this machine (the role `broker`), if any."""
    if not url:
        return None
    port = urlsplit(url.split(";")[0]).port or (5672 if url.startswith("amqp") else 6379)
    for connection in psutil.net_connections("tcp"):
        address = connection.laddr
        if connection.status == psutil.CONN_LISTEN and address and address.port == port and connection.pid:
            return int(connection.pid)
    return None


class Bench:
    """One run: the service started, the photo on disk, and the passes that measure them."""

    def __init__(self, args: argparse.Namespace, service: PinnedService, image: bytes, path: Path, env: dict[str, str]):
        self.args, self.service, self.image = args, service, image
        self.pinned: dict[str, Any] = {"model": args.model, "core": args.service_core, "env": env, "image": path}

    def run(self) -> dict[str, Any]:
        alone = one_image(images=self.args.single_images, **self.pinned)
        # The yardstick of the 1 job/s run: one image at a time at the same pace, caches as cold as the service's.
        paced = one_image(images=self.args.idle_jobs, pace=1.0, **self.pinned)
        ceilings, services, spent = self.alternate()
        ceiling_mean = statistics.mean(c["images_per_s"] for c in ceilings)
        ceiling_cpu = statistics.mean(c["cpu_per_image_ms"] for c in ceilings)
        service_mean = statistics.mean(s["jobs_per_s"] for s in services)
        service = spent.per_job(sum(s["jobs"] for s in services))
        multi = asyncio.run(self.multi())
        if multi["supported"]:
            multi["ratio"] = multi["jobs_per_s"] / ceiling_mean
        waited, _ = asyncio.run(self.saturation(waited=True))
        waited["ratio"] = waited["jobs_per_s"] / ceiling_mean
        lat = asyncio.run(self.latency())
        return {
            **self.header(),
            "one_image": alone,
            "one_image_paced": paced,
            "ceiling": ceilings,
            "service": services,
            "multi": multi,
            "waited": waited,
            "latency": lat,
            "summary": {
                "ceiling_images_per_s": ceiling_mean,
                "service_jobs_per_s": service_mean,
                "ratio": service_mean / ceiling_mean,
                "ceiling_cpu_per_image_ms": ceiling_cpu,
                "service": service,
                "outside_decode_inference_ms": service["service_cpu_per_job_ms"] - ceiling_cpu,
                "idle_overhead_ms": lat["idle"].get("p50_ms", float("nan")) - paced["median_ms"],
                "idle_overhead_waited_ms": lat["idle_waited"].get("p50_ms", float("nan")) - paced["median_ms"],
                "idle_overhead_warm_ms": lat["idle"].get("p50_ms", float("nan")) - alone["median_ms"],
            },
        }

    def alternate(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Spent]:
        """Ceiling, service, ..., ceiling: each pass's figures, and what the service used in all its windows."""
        ceilings, services, spent = [self.ceiling_pass()], [], []
        for _ in range(self.args.passes):
            figures, used = asyncio.run(self.saturation())
            services.append(figures)
            spent.append(used)
            ceilings.append(self.ceiling_pass())
        return ceilings, services, functools.reduce(Spent.__add__, spent)

    def header(self) -> dict[str, Any]:
        args = self.args
        models = httpx.get(f"{self.service.url}/models", timeout=10).json()
        model = next(m for m in models if args.model in (m["name"], f"{m['name']}@{m['version']}", *m["aliases"]))
        return {
            "model": f"{model['name']}@{model['version']}",
            "runtime": model["runtime"],
            "precision": model.get("precision", "fp32"),
            "photo_bytes": len(self.image),
            "service_core": args.service_core,
            "client_core": args.client_core,
            **self.worker(),
            "processes": args.processes,
            "concurrency": args.concurrency,
            "machine": machine(),
            "python": interpreter(),
            "log_level": args.log_level,
        }

    def worker(self) -> dict[str, Any]:
        """How the service's classifying worker runs its jobs, from its heartbeat: its pool and jobs at once."""
        workers = httpx.get(f"{self.service.url}/admin/workers", timeout=10).json()
        queue = Settings.model_fields["queue"].default
        worker = next(w for w in workers if w["queue"] == queue)
        return {"pool": worker["pool"], "worker_concurrency": worker["concurrency"]}

    def ceiling_pass(self) -> dict[str, Any]:
        """The ceiling, with the idle service's own CPU use meanwhile (it shares the core)."""
        args, before = self.args, self.service.usage()
        measured = ceiling(processes=args.processes, images=args.ceiling_images, **self.pinned)
        idle = Spent.between(before, self.service.usage())
        return {**measured, "service_idle_cpu_share": idle.service_cpu / idle.seconds}

    async def saturation(self, parts: int = 1, *, waited: bool = False) -> tuple[dict[str, Any], Spent]:
        return await window(self.service, self.image, self.args, parts=parts, waited=waited)

    async def multi(self) -> dict[str, Any]:
        """Saturation with `--parts` images per request, if the server takes several."""
        if self.args.parts < 2:
            return {"supported": False, "skipped": True, "detail": "not run (--parts 1)"}
        async with Load(self.service.url, self.image, self.args.model) as load:
            refused = await load.takes_several_images()
        if refused is not None:
            return {"supported": False, "detail": refused}
        figures, _ = await self.saturation(self.args.parts)
        return {"supported": True, "parts": self.args.parts, **figures}

    async def latency(self) -> dict[str, Any]:
        args = self.args
        async with Load(self.service.url, self.image, args.model) as load:
            busy = await offer(load.single, rate=args.rate, requests=args.rate_jobs)
            idle = await offer(load.single, rate=1.0, requests=args.idle_jobs)
            # The same pace with the result in the upload's answer: what the SDK's classify() waits.
            idle_waited = await offer(load.waited, rate=1.0, requests=args.idle_jobs)
        return {
            "busy": {"per_s": args.rate, **latency(busy)},
            "idle": {"per_s": 1.0, **latency(idle)},
            "idle_waited": {"per_s": 1.0, **latency(idle_waited)},
        }


async def window(
    service: PinnedService, image: bytes, args: argparse.Namespace, *, parts: int = 1, waited: bool = False
) -> tuple[dict[str, Any], Spent]:
    """A closed-loop window at `--concurrency` jobs in flight, `parts` images per request (`waited`: one image per
    request that answers with the result, no WebSocket): its figures, and what the service used in it."""
    async with Load(service.url, image, args.model) as load:
        unit = load.waited if waited else load.single if parts == 1 else functools.partial(load.multi, parts)
        loops = max(1, args.concurrency // parts)
        run = await saturate(
            unit, loops=loops, warmup=args.warmup, jobs=args.jobs, seconds=args.seconds, sample=service.usage
        )
    assert run.opened is not None
    assert run.closed is not None
    if not run.completed:
        raise RuntimeError(f"no job completed in the window: {latency(run.jobs)['failed']}")
    spent = Spent.between(run.opened, run.closed)
    return {**spent.per_job(run.completed), "latency": latency(run.jobs)}, spent


def add_window_arguments(parser: argparse.ArgumentParser, *, jobs: int, warmup: int) -> None:
    """The saturation windows' options and the ceiling's, for every bench that alternates them."""
    add = parser.add_argument
    add("--processes", type=int, default=2, help="single-threaded ceiling processes")
    add("--concurrency", type=int, default=32, help="jobs in flight at saturation (closed loop)")
    add("--jobs", type=int, default=jobs, help="jobs in each saturation window")
    add("--seconds", type=float, default=40.0, help="longest saturation window, seconds")
    add("--warmup", type=int, default=warmup, help="jobs before each saturation window opens")
    add("--passes", type=int, default=2, help="service passes (the ceiling runs once more, around them)")
    add("--ceiling-images", type=int, default=250, help="images per ceiling process per pass")


def main() -> None:
    args = _arguments()
    signal.signal(signal.SIGTERM, _interrupt)
    _pin_this_process(args.client_core)
    image = photo()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="visionq-bench-") as tmp:
        root = Path(tmp)
        env = service_env(root, args)
        _prepare(args.model, env)
        path = root / "photo.jpg"
        path.write_bytes(image)
        log = args.out.parent / "serve.log"
        with PinnedService(env, core=args.service_core, log=log, broker_pid=broker_process(args.broker)) as service:
            report = Bench(args, service, image, path, env).run()
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    sys.stdout.write(table(report))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_layout_arguments(parser)
    add_window_arguments(parser, jobs=500, warmup=32)
    add = parser.add_argument
    add("--single-images", type=int, default=30, help="images of the one-image-alone timing")
    add("--parts", type=int, default=8, help="images per multi-image request (1: skip that measure)")
    add("--rate", type=float, default=10.0, help="offered jobs/s of the busy latency run (open loop)")
    add("--rate-jobs", type=int, default=200, help="jobs of the busy latency run")
    add("--idle-jobs", type=int, default=30, help="jobs of the idle latency run, at 1 job/s")
    add("--broker", help="VISIONQ_BROKER_URL: a broker apart from job state (its process's CPU is counted, unpinned)")
    add("--out", type=Path, default=Path("var/bench/throughput.json"))
    args = parser.parse_args()
    usable = os.sched_getaffinity(0)
    if args.service_core == args.client_core or not {args.service_core, args.client_core} <= usable:
        parser.error(f"--service-core and --client-core must be two different CPUs of {sorted(usable)}")
    return args


def _prepare(model: str, env: dict[str, str]) -> None:
    """Export and check the model now, so that neither the ceiling nor the service does it while measured."""
    command = [sys.executable, "-m", "visionq", "prepare", model]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=PREPARE_TIMEOUT, check=False)
    if done.returncode:
        raise RuntimeError(f"visionq prepare {model} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def _pin_this_process(core: int) -> None:
    """Every thread of this process (the load generator) on `core`; threads started later inherit it."""
    for thread in psutil.Process().threads():
        os.sched_setaffinity(thread.id, {core})


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: the service and every process the bench started are stopped")
