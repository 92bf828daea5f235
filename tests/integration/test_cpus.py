"""Worker sizing in a real process: a process pinned to one CPU (`taskset`) sizes itself for one CPU, whatever
the machine's count."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from visionq.cpus import available_cpus

#: Prints the sizing a worker started in this process would use.
SIZING = "from visionq.settings import Settings; s = Settings(); print(s.concurrency, s.threads_per_job, s.pool.value)"
#: Seconds the child Python may take to import settings and print.
CHILD_TIMEOUT = 60.0


def sizing(*, pinned_to: int | None = None, pool: str = "prefork") -> tuple[int, int]:
    concurrency, threads, _ = run_sizing(pinned_to=pinned_to, pool=pool)
    return concurrency, threads


def run_sizing(*, pinned_to: int | None = None, pool: str = "prefork") -> tuple[int, int, str]:
    command = [sys.executable, "-c", SIZING]
    if pinned_to is not None:
        taskset = shutil.which("taskset")
        if taskset is None:
            pytest.skip("taskset (util-linux) is not installed")
        command = [taskset, "-c", str(pinned_to), *command]
    env = {**os.environ, "VISIONQ_WORKER_POOL": pool}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=True)
    concurrency, threads, resolved = done.stdout.split()
    return int(concurrency), int(threads), resolved


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_a_process_pinned_to_one_cpu_runs_one_job_on_one_thread(pool: str) -> None:
    assert sizing(pinned_to=min(os.sched_getaffinity(0)), pool=pool) == (1, 1)


def test_an_unpinned_process_sizes_for_every_cpu_it_may_use() -> None:
    cpus = available_cpus()
    assert cpus <= len(os.sched_getaffinity(0))
    assert sizing(pool="prefork") == (cpus, 1)
    assert sizing(pool="solo") == (cpus, cpus)


def test_a_worker_pinned_to_one_cpu_runs_its_one_job_in_the_consumer_by_default() -> None:
    """`auto`: no thread to hand a lone job to; with more CPUs, jobs side by side in threads."""
    assert run_sizing(pinned_to=min(os.sched_getaffinity(0)), pool="auto") == (1, 1, "solo")
    cpus = available_cpus()
    assert run_sizing(pool="auto") == ((cpus, 1, "threads") if cpus > 1 else (1, 1, "solo"))
