"""How the API answers while Redis is down, and how soon it serves again once Redis is back.

    .venv/bin/python bench/redis_outage.py [--submits N]

Starts a private redis-server (AOF) and the API with default settings, stops Redis, times N submissions
(each must be a 503 with Retry-After), starts Redis again and times the first accepted submission.
Prints the figures; asserts nothing about time (this machine's timings are noisy).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from factories import cat_variants
from integration.stack import ApiServer
from visionq.embedded import EmbeddedRedis
from visionq.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=20)
    args = parser.parse_args()
    cat = cat_variants()["jpeg"]
    with tempfile.TemporaryDirectory() as root:
        redis = EmbeddedRedis(Path(root) / "redis")
        redis.start()
        api = ApiServer(Settings(redis_url=redis.url, data_dir=Path(root) / "data", log_level="ERROR"))
        api.start()
        with httpx.Client(base_url=api.url, timeout=30) as client:
            redis.stop()
            times, statuses = [], set()
            for _ in range(args.submits):
                started = time.perf_counter()
                answer = client.post("/classify", files={"file": ("cat.jpg", cat)})
                times.append(time.perf_counter() - started)
                statuses.add((answer.status_code, answer.headers.get("retry-after")))
            redis.start()
            started = time.perf_counter()
            while client.post("/classify", files={"file": ("cat.jpg", cat)}).status_code != 202:
                time.sleep(0.01)
            recovered = time.perf_counter() - started
        api.stop()
        redis.stop()
    sys.stdout.write(
        f"Redis down: {args.submits} submits answered {sorted(statuses)}\n"
        f"  time to answer: median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms\n"
        f"Redis back: first 202 after {recovered * 1000:.0f} ms (no process restarted)\n"
    )


if __name__ == "__main__":
    main()
