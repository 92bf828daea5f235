"""How good the queue's estimates are, and what a queue position costs to read.

    .venv/bin/python bench/eta.py [--jobs 200] [--queued 10000] [--model efficientnet-lite0]

One embedded Redis, `visionq api` and `visionq worker` (the default pool), images in a folder, the result cache
off (every job sends the same photo):

1. warm-up: 40 jobs, so that the workers have measured the queue's pace;
2. a burst of `--jobs` jobs sent back to back while the worker drains them; right after each submit its status
   gives `queue_position` and `estimated_start`; once all have ended, each job's real start is its `created_at`
   plus `metadata.queue_time`. Reported: the estimate's error (real minus estimated start), absolute and relative
   to how long the job really waited; and the positions one job (the burst's last) showed while it waited,
   read every 50 ms, which must only fall;
3. the cost of a position: the worker stopped, `GET /status` of a waiting job timed (median of 200) with 100 jobs
   queued and with `--queued` (tiny images, to queue them fast), at the front and at the back of the queue.

It prints its figures and writes `var/bench/eta.json`.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pools import START_TIMEOUT, _answers, _seconds, _wait, service_env
from throughput import photo

from visionq.embedded import EmbeddedRedis, free_port

DRAIN_TIMEOUT = 900.0
TERMINAL = ("completed", "failed", "cancelled", "expired")
WARM_UP = 40


class Service:
    """The API and a worker on an embedded Redis in a temporary folder."""

    def __init__(self, tmp: str, redis_url: str, *, model: str, max_queued: int) -> None:
        self.env = service_env(tmp, redis_url, model=model, max_queued=max_queued)
        self.port = free_port()
        self.api = subprocess.Popen(
            [sys.executable, "-m", "visionq", "api", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.worker: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        _wait(lambda: _answers(self.client), START_TIMEOUT, "the API")

    def start_worker(self) -> None:
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "visionq", "worker"],
            env=self.env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.terminate()
            self.worker.wait(60)
            self.worker = None

    def submit(self, image: bytes) -> str:
        answer = self.client.post("/classify", files={"file": ("photo.jpg", image, "image/jpeg")})
        job_id: str = answer.raise_for_status().json()["job_id"]
        return job_id

    def status(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.client.get(f"/status/{job_id}").json()
        return body

    def drain(self, ids: list[str]) -> None:
        _wait(lambda: all(self.status(job_id)["status"] in TERMINAL for job_id in ids), DRAIN_TIMEOUT, "the jobs")

    def close(self) -> None:
        self.stop_worker()
        self.client.close()
        self.api.terminate()
        self.api.wait(60)


def estimates(service: Service, image: bytes, jobs: int) -> dict[str, Any]:
    """The burst: each job's estimated start against its real one, and one job's positions as it waited."""
    sent: list[tuple[str, float, dict[str, Any]]] = []
    positions: list[int] = []
    watching = threading.Event()

    def watch() -> None:  # the burst's last job, once it exists
        with httpx.Client(base_url=service.client.base_url, timeout=30) as client:
            while not watching.is_set():
                time.sleep(0.01)
            job_id = sent[-1][0]
            while (body := client.get(f"/status/{job_id}").json())["status"] == "pending":
                if "queue_position" in body:
                    positions.append(body["queue_position"])
                time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    for _ in range(jobs):
        job_id = service.submit(image)
        sent.append((job_id, time.time(), service.status(job_id)))
    watching.set()
    service.drain([job_id for job_id, _, _ in sent])
    watcher.join(60)
    errors, relative = [], []
    for job_id, submitted, status in sent:
        result = service.client.get(f"/result/{job_id}").json()
        if "estimated_start" not in status or "metadata" not in result:
            continue
        started = _seconds(result["created_at"]) + result["metadata"]["queue_time"]
        error = started - _seconds(status["estimated_start"])
        errors.append(error)
        relative.append(abs(error) / max(started - submitted, 0.05))
    absolute = sorted(abs(error) for error in errors)
    increases = sum(later > earlier for earlier, later in zip(positions, positions[1:], strict=False))
    return {
        "jobs": jobs,
        "estimated": len(errors),
        "error_median_s": statistics.median(errors) if errors else None,
        "abs_error_median_s": statistics.median(absolute) if absolute else None,
        "abs_error_p90_s": absolute[int(0.9 * (len(absolute) - 1))] if absolute else None,
        "relative_error_median": statistics.median(relative) if relative else None,
        "positions_read": len(positions),
        "first_position": positions[0] if positions else None,
        "position_increases": increases,
    }


def position_cost(service: Service, queued: int) -> dict[str, Any]:
    """Median `GET /status` time of a waiting job at the front and at the back, with 100 and `queued` jobs."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 80, 40)).save(buffer, "PNG")
    tiny = buffer.getvalue()
    service.stop_worker()
    ids = [service.submit(tiny) for _ in range(100)]
    figures: dict[str, Any] = {"queued_100": _timed(service, ids[0], ids[-1])}
    ids += [service.submit(tiny) for _ in range(queued - 100)]
    figures[f"queued_{queued}"] = _timed(service, ids[0], ids[-1])
    figures["back_position"] = service.status(ids[-1]).get("queue_position")
    return figures


def _timed(service: Service, front: str, back: str) -> dict[str, float]:
    def median_ms(job_id: str) -> float:
        times = []
        for _ in range(200):
            started = time.perf_counter()
            service.status(job_id)
            times.append((time.perf_counter() - started) * 1000)
        return round(statistics.median(times), 3)

    return {"front_ms": median_ms(front), "back_ms": median_ms(back)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--out", type=Path, default=Path("var/bench/eta.json"))
    args = parser.parse_args()
    image = photo()
    with tempfile.TemporaryDirectory(prefix="visionq-eta-") as tmp, EmbeddedRedis(Path(tmp) / "redis") as redis:
        # Twice what is ever queued: a submit at `normal` may fill only 90% of the bound (Priority.shed_share).
        service = Service(tmp, redis.url, model=args.model, max_queued=2 * (args.queued + args.jobs + WARM_UP))
        try:
            service.start_worker()
            service.drain([service.submit(image) for _ in range(WARM_UP)])
            burst = estimates(service, image, args.jobs)
            cost = position_cost(service, args.queued)
        finally:
            service.close()
    report = {"burst": burst, "position_cost": cost}
    print(json.dumps(report, indent=2))  # noqa: T201
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
