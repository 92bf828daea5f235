"""The in-process ceiling: the worker's own `run_classification` (decode, preprocess, the model, top-5) with no
service around it, in single-threaded processes pinned to one core.

The bench starts each process as `taskset -c CORE python bench/ceiling.py MODEL IMAGE IMAGES [PACE]`. It loads
the model as a worker does (one intra-op thread), classifies the image once to warm up, prints `ready`, waits
for a line on stdin, classifies the image IMAGES times (one every PACE seconds if given, else back to back) and
prints one JSON line: its start and end on the machine-wide monotonic clock, its CPU seconds, and each image's
seconds. The lines on stdin start every process of a pass at once.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

#: Seconds one ceiling pass may take, model loads included, before its processes are killed.
PASS_TIMEOUT = 300.0


@dataclass(frozen=True)
class Run:
    """What one ceiling process did between the start line and its last image."""

    started: float
    ended: float
    cpu_seconds: float
    each: list[float]


def run_pinned(
    image: Path, *, model: str, processes: int, images: int, core: int, env: dict[str, str], pace: float = 0.0
) -> list[Run]:
    """`processes` ceiling processes on `core`, started together once all are ready, `images` images each, one every
    `pace` seconds (0: back to back)."""
    command = [
        "taskset",
        "-c",
        str(core),
        sys.executable,
        str(Path(__file__).resolve()),
        model,
        str(image),
        str(images),
        str(pace),
    ]
    started = [
        subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    watchdog = threading.Timer(PASS_TIMEOUT + images * pace, _kill, [started])
    watchdog.start()
    try:
        for process in started:
            _expect(process.stdout, lambda line: line == "ready")
        for process in started:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        return [Run(**json.loads(_expect(process.stdout, lambda line: line.startswith("{")))) for process in started]
    finally:
        watchdog.cancel()
        _kill(started)
        for process in started:
            process.wait()


def ceiling(image: Path, *, model: str, processes: int, images: int, core: int, env: dict[str, str]) -> dict[str, Any]:
    """images/s of `processes` processes sharing `core` (all their images over the time from the first start to
    the last end), and CPU per image."""
    runs = run_pinned(image, model=model, processes=processes, images=images, core=core, env=env)
    done = sum(len(run.each) for run in runs)
    seconds = max(run.ended for run in runs) - min(run.started for run in runs)
    return {
        "images_per_s": done / seconds,
        "cpu_per_image_ms": 1000 * sum(run.cpu_seconds for run in runs) / done,
        "processes": processes,
        "images": done,
        "seconds": seconds,
    }


def one_image(
    image: Path, *, model: str, images: int, core: int, env: dict[str, str], pace: float = 0.0
) -> dict[str, Any]:
    """The time of one image alone on `core`: the median of `images`, one process, in a row or one every `pace`
    seconds (as the service gets them at 1 job/s: what other processes did meanwhile has cooled the caches)."""
    (run,) = run_pinned(image, model=model, processes=1, images=images, core=core, env=env, pace=pace)
    return {
        "median_ms": 1000 * statistics.median(run.each),
        "min_ms": 1000 * min(run.each),
        "images": images,
        "pace_s": pace,
    }


def _kill(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        process.kill()


def _expect(stream: IO[str] | None, wanted: Callable[[str], bool]) -> str:
    """The first line of `stream` that `wanted` accepts (a library may print its own lines first)."""
    assert stream is not None
    for line in stream:
        if wanted(line.strip()):
            return line.strip()
    raise RuntimeError("a ceiling process ended before its answer (its stderr is above)")


def main() -> None:
    """One ceiling process (see the module docstring)."""
    from visionq.inference.catalog import build_catalog
    from visionq.inference.registry import ModelRegistry
    from visionq.settings import BuiltinRuntime, Settings
    from visionq.worker.pipeline import run_classification

    model, path, images = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    pace = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    data = path.read_bytes()
    settings = Settings()
    catalog = build_catalog(settings)
    spec = catalog.resolve(model)
    onnx = settings.builtin_runtime is BuiltinRuntime.ONNX  # as the workers run it (VISIONQ_BUILTIN_RUNTIME)
    classifier = ModelRegistry(catalog, threads=1, cache=settings.model_cache, builtin_onnx=onnx).get(spec)
    labels = catalog.labels(spec)

    def classify() -> float:
        began = time.monotonic()
        run_classification(
            data, classifier=classifier, labels=labels, top=5, max_pixels=settings.max_pixels, report=id,
            draft=settings.jpeg_draft,
        )  # fmt: skip
        return time.monotonic() - began

    classify()
    print("ready", flush=True)  # noqa: T201 (the protocol with the bench)
    sys.stdin.readline()
    cpu, started = time.process_time(), time.monotonic()
    each = []
    for _ in range(images):
        began = time.monotonic()
        each.append(classify())
        time.sleep(max(0.0, began + pace - time.monotonic()))
    run = Run(started=started, ended=time.monotonic(), cpu_seconds=time.process_time() - cpu, each=each)
    print(json.dumps(asdict(run)), flush=True)  # noqa: T201


if __name__ == "__main__":
    main()
