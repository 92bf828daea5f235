"""Where a job's time goes at one job per second, read from Redis's own clock: the pinned service of
`throughput.py`, one job a second, and Redis's MONITOR stamping the steps each job's path sends.

    .venv/bin/python bench/idle_path.py [--jobs 25] [--saturate 300] [--model efficientnet-lite0]

For each job, from the client's first byte of `POST /classify` to its last WebSocket message (the result):
- upload + submit: the upload and everything the API does before the job's one SUBMIT step;
- pickup: SUBMIT to the worker's TAKE (the broker's hop, kombu, Celery, the pool);
- processing: TAKE to the COMPLETE step (the image read, decode, the model, the result);
- delivery: COMPLETE to the client holding the result (pub/sub, the API's WebSocket, the client).
It prints the medians, with one image alone at the same pace on the same core for comparison. `--saturate N`
runs N jobs at saturation first, as the service is after `throughput.py`'s windows. MONITOR costs Redis some CPU:
compare the phases with each other, not the total with `throughput.py`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from ceiling import one_image
from load import Load, saturate
from pinned import PinnedService
from throughput import _pin_this_process, add_layout_arguments, layout_service_env, photo

from visionq.jobs import scripts

PHASES = ("upload + submit", "pickup", "processing", "delivery", "total")
#: The first jobs are left out: the service's per-second reads and the worker's stage timings settle first.
SETTLING_JOBS = 2


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


STEPS = {"submit": _sha(scripts.SUBMIT), "take": _sha(scripts.TAKE), "complete": _sha(scripts.COMPLETE)}


class Monitor:
    """Redis's MONITOR on a thread of its own: every command with Redis's timestamp."""

    def __init__(self, url: str) -> None:
        self.commands: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._listen, args=(url,), daemon=True)
        self._thread.start()

    def _listen(self, url: str) -> None:
        try:
            with redis.Redis.from_url(url).monitor() as monitor:  # type: ignore[no-untyped-call]
                for command in monitor.listen():
                    self.commands.append(command)
        except redis.ConnectionError:  # the service stopped
            return

    def steps(self, start: float, end: float) -> dict[str, float]:
        """When each step of the job sent between `start` and `end` (unix s) ran first."""
        seen: dict[str, float] = {}
        for command in self.commands:
            if start <= command["time"] <= end and command["command"].startswith("EVALSHA"):
                sha = command["command"].split()[1]
                for name, digest in STEPS.items():
                    if sha == digest:
                        seen.setdefault(name, command["time"])
        return seen


async def _paced_jobs(url: str, image: bytes, model: str, jobs: int) -> list[tuple[float, float]]:
    async with Load(url, image, model) as load:
        spans = []
        for _ in range(jobs):
            started = time.time()
            finished = await load.single()
            if finished[0].completed:
                spans.append((started, time.time()))
            await asyncio.sleep(1.0)
        return spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_layout_arguments(parser)
    parser.add_argument("--jobs", type=int, default=25)
    parser.add_argument("--saturate", type=int, default=300, help="jobs at saturation before (0: none)")
    args = parser.parse_args()
    _pin_this_process(args.client_core)
    root = Path(tempfile.mkdtemp(prefix="visionq-idle-path-"))
    env = layout_service_env(root, args)
    image = photo()
    (root / "photo.jpg").write_bytes(image)
    with PinnedService(env, core=args.service_core, log=root / "serve.log") as service:
        alone = one_image(images=args.jobs, pace=1.0, model=args.model, core=args.service_core, env=env,
                          image=root / "photo.jpg")  # fmt: skip
        if args.saturate:
            asyncio.run(_saturate(service.url, image, args.model, args.saturate))
        monitor = Monitor(service.redis_url)
        time.sleep(0.5)
        spans = asyncio.run(_paced_jobs(service.url, image, args.model, args.jobs))
        time.sleep(0.2)
    phases: dict[str, list[float]] = {name: [] for name in PHASES}
    for started, ended in spans[SETTLING_JOBS:]:
        steps = monitor.steps(started, ended)
        if len(steps) < len(STEPS):
            continue
        phases["upload + submit"].append(steps["submit"] - started)
        phases["pickup"].append(steps["take"] - steps["submit"])
        phases["processing"].append(steps["complete"] - steps["take"])
        phases["delivery"].append(ended - steps["complete"])
        phases["total"].append(ended - started)
    lines = [f"jobs measured: {len(phases['total'])}; one image alone, one per second: {alone['median_ms']:.1f} ms"]
    lines += [f"  {name:16s} {1000 * statistics.median(values):6.2f} ms (median)" for name, values in phases.items()]
    sys.stdout.write("\n".join(lines) + "\n")


async def _saturate(url: str, image: bytes, model: str, jobs: int) -> None:
    async with Load(url, image, model) as load:
        await saturate(load.single, loops=32, warmup=0, jobs=jobs, seconds=300, sample=lambda: 0)


if __name__ == "__main__":
    main()
