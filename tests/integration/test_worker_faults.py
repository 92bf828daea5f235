"""Worker processes that die, hang or are told to stop, on real prefork workers: a poison input is
quarantined after killing two processes, a job past its time limit fails with a code and its stuck
process is replaced, repeated SIGKILLs lose nothing, and SIGTERM lets the job in hand finish.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import redis
from PIL import Image

from factories import cat_variants, chelsea, encode
from integration.conftest import StackFactory
from integration.stack import FAST_RECOVERY, WorkerProcess, submit, wait_for, wait_terminal
from model_factories import manifest, model_folder, save_spinning, spin_steps_per_second
from visionq.jobs import keys
from visionq.jobs.records import isoformat, utcnow
from visionq.jobs.store import QUEUED_FIELD
from visionq.settings import Settings

CAT_JPEG = cat_variants()["jpeg"]
RED = encode(Image.new("RGB", (40, 30), (220, 10, 10)), "PNG")
#: The slow model's inference, seconds: past the soft limit below, well short of the hard one.
SLOW_SECONDS = 3.0
SOFT_LIMIT, HARD_LIMIT = 1.0, 8.0


@pytest.fixture(scope="module")
def spinning_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`slow` busies its process for SLOW_SECONDS; `stuck` for hours, in native code."""
    root = tmp_path_factory.mktemp("spinning-models")
    rate = spin_steps_per_second()
    for name, steps in (("slow", int(rate * SLOW_SECONDS)), ("stuck", 10**13)):
        save_spinning(steps, model_folder(root, name, manifest(name, 1, "torchscript", "m.pt")) / "m.pt")
    return root


def pool_pid(api: httpx.Client, job_id: str) -> int:
    """The pool process running the job (its worker id is `host:pid`)."""
    return int(api.get(f"/status/{job_id}").json()["worker_id"].rpartition(":")[2])


def when_reading_or_running(api: httpx.Client, job_id: str, attempt: int | None = None) -> bool:
    """Whether the job's delivery (`attempt`, or any) is decoding or running its image."""
    status = api.get(f"/status/{job_id}").json()
    return (
        status["status"] == "processing"
        and status["stage"] in {"preprocessing", "inference"}
        and attempt in {None, status["attempts"]}
    )


def in_hand_since(api: httpx.Client, job_ids: list[str], since: str) -> bool:
    """Whether one of the jobs is on its image in a delivery that started after `since`."""
    statuses = (api.get(f"/status/{job_id}").json() for job_id in job_ids)
    return any(s["stage"] in {"preprocessing", "inference"} and s["updated_at"] > since for s in statuses)


def test_an_input_that_kills_two_worker_processes_is_quarantined(start_stack: StackFactory) -> None:
    _, _, server = start_stack("poison", warm_models=["efficientnet-lite2"])
    heavy = encode(chelsea().resize((3600, 2400)), "JPEG", quality=95)
    with httpx.Client(base_url=server.url, timeout=30) as api:
        job_id = submit(api, heavy, model_version="efficientnet-lite2").json()["job_id"]
        for attempt in (1, 2):  # as an out-of-memory kill or a crash in native code would
            wait_for(partial(when_reading_or_running, api, job_id, attempt), 60, "the job on its image", 0.002)
            os.kill(pool_pid(api, job_id), signal.SIGKILL)
        final = wait_terminal(api, job_id, timeout=60)
        letters = {entry["job_id"]: entry for entry in api.get("/admin/dlq").json()}
        healthy = submit(api, CAT_JPEG).json()["job_id"]
        after = wait_terminal(api, healthy, timeout=60)

    assert final["status"] == "failed"
    assert final["error"]["code"] == "poison_input"
    assert final["attempts"] == 3, "the third delivery quarantined it without running it"
    evidence = letters[job_id]["crashes"]
    assert [crash["attempt"] for crash in evidence] == [1, 2]
    assert {crash["stage"] for crash in evidence} <= {"preprocessing", "inference"}
    assert letters[job_id]["error"]["code"] == "poison_input"
    assert after["status"] == "completed", "the fleet goes on with other jobs"


def test_repeated_sigkills_of_the_whole_worker_lose_no_job(start_stack: StackFactory) -> None:
    # Kills can land on the same job more than once: enough attempts that every job must complete.
    settings, worker, server = start_stack("kills", max_attempts=10)
    client = redis.Redis.from_url(settings.broker_url, decode_responses=True)
    # A PNG is decoded in full (no draft mode), so each job is in hand long enough to be caught.
    photo = encode(chelsea().resize((1800, 1200)), "PNG")
    job_ids: list[str] = []
    with httpx.Client(base_url=server.url, timeout=30) as api:
        for _ in range(3):
            # Each round brings its own jobs: a fast worker may have finished the previous round's.
            since = isoformat(utcnow())  # a job in hand of the worker started last, not one its predecessor left
            job_ids += [submit(api, photo, priority=p).json()["job_id"] for p in ("low", "normal", "high", "normal")]
            wait_for(partial(in_hand_since, api, job_ids, since), 60, "a job in hand", 0.005)
            worker.kill()
            worker.start()
        finals = [wait_terminal(api, job_id, timeout=120) for job_id in job_ids]
        results = [api.get(f"/result/{job_id}").json() for job_id in job_ids]

    failures = {
        final["job_id"]: (final["attempts"], final.get("error")) for final in finals if final["status"] != "completed"
    }
    assert [final["status"] for final in finals] == ["completed"] * len(job_ids), failures
    assert max(final["attempts"] for final in finals) >= 2, "the kills hit jobs in hand"
    assert all(result["predictions"][0]["class_id"] in {281, 282, 285} for result in results)
    # This test's jobs only: the set is shared with every stack on the Redis, and another's may be mid-job.
    assert not any(client.sismember(keys.PROCESSING_JOBS, job_id) for job_id in job_ids)
    assert not any(client.exists(keys.image(job_id)) for job_id in job_ids)
    client.close()


@pytest.fixture(scope="module")
def limited(start_stack: StackFactory, spinning_models: Path) -> Iterator[httpx.Client]:
    _, _, server = start_stack(
        "time-limits", model_dir=spinning_models, job_soft_time_limit=SOFT_LIMIT, job_time_limit=HARD_LIMIT
    )
    with httpx.Client(base_url=server.url, timeout=30) as api:
        yield api


def test_a_job_past_its_soft_time_limit_fails_with_a_code(limited: httpx.Client) -> None:
    job_id = submit(limited, RED, model_version="slow").json()["job_id"]
    final = wait_terminal(limited, job_id, timeout=60)

    assert final["status"] == "failed"
    assert final["error"]["code"] == "time_limit_exceeded"
    assert f"{SOFT_LIMIT:g} s" in final["error"]["message"]
    assert final["attempts"] == 1, "a job that hung is not run again on another worker"
    assert job_id in {entry["job_id"] for entry in limited.get("/admin/dlq").json()}


def test_a_process_stuck_past_the_hard_time_limit_is_replaced(limited: httpx.Client) -> None:
    stuck = submit(limited, RED, model_version="stuck").json()["job_id"]
    wait_for(lambda: when_reading_or_running(limited, stuck), 60, "the stuck job to run")
    stuck_pid = pool_pid(limited, stuck)
    final = wait_terminal(limited, stuck, timeout=HARD_LIMIT + 30)
    following = submit(limited, CAT_JPEG).json()["job_id"]
    after = wait_terminal(limited, following, timeout=60)

    assert final["status"] == "failed"
    assert final["error"]["code"] == "time_limit_exceeded"
    assert f"{HARD_LIMIT:g} s" in final["error"]["message"]
    assert after["status"] == "completed"
    assert pool_pid(limited, following) != stuck_pid, "the stuck process was replaced"
    with pytest.raises(ProcessLookupError):
        os.kill(stuck_pid, 0)


def test_sigterm_lets_the_job_in_hand_finish_and_leaves_the_queue_to_others(
    start_stack: StackFactory, spinning_models: Path
) -> None:
    settings, worker, server = start_stack("warm-shutdown", model_dir=spinning_models, warm_models=["slow"])
    with httpx.Client(base_url=server.url, timeout=30) as api:
        in_hand = submit(api, RED, model_version="slow").json()["job_id"]
        queued = [submit(api, RED, model_version="slow").json()["job_id"] for _ in range(2)]
        wait_for(lambda: api.get(f"/status/{in_hand}").json()["stage"] == "inference", 30, "the job in hand")
        assert worker.process is not None
        os.kill(worker.process.pid, signal.SIGTERM)  # as Kubernetes and Docker stop it: the main process only
        assert worker.process.wait(SLOW_SECONDS + 20) == 0
        finished = api.get(f"/status/{in_hand}").json()
        waiting = [api.get(f"/status/{job_id}").json() for job_id in queued]

        other = WorkerProcess(settings)
        other.start()
        try:
            taken_over = [wait_terminal(api, job_id, timeout=60) for job_id in queued]
        finally:
            other.stop()

    assert (finished["status"], finished["attempts"]) == ("completed", 1)
    assert [status["status"] for status in waiting] == ["pending", "pending"]
    assert [(status["status"], status["attempts"]) for status in taken_over] == [("completed", 1)] * 2


def test_a_queued_job_whose_message_was_lost_is_queued_again(start_stack: StackFactory) -> None:
    settings, worker, server = start_stack("lost-message", requeue_lost_after=1.0)
    client = redis.Redis.from_url(settings.broker_url, decode_responses=True)
    worker.stop()
    queue = keys.priority_list(settings.queue, 3)
    with httpx.Client(base_url=server.url, timeout=30) as api:
        lost, kept, unqueued = (submit(api, CAT_JPEG, priority="high").json()["job_id"] for _ in range(3))
        # As a worker's fetch cut off by a Redis restart would: the message is gone, the job still queued.
        # `unqueued` stands for a job of another queue sharing the Redis: not this worker's to queue again.
        for job_id in (lost, unqueued):
            [message] = [m for m in client.lrange(queue, 0, -1) if job_id in m]
            assert client.lrem(queue, 1, str(message)) == 1
        client.hset(keys.status(unqueued), QUEUED_FIELD, "visionq-test-another-queue")
        worker.start()
        finals = [wait_terminal(api, job_id, timeout=60) for job_id in (lost, kept)]
        time.sleep(2 * settings.sweep_interval)  # sweeps enough to have queued it, had it been eligible
        left = api.get(f"/status/{unqueued}").json()

    assert [(f["status"], f["attempts"]) for f in finals] == [("completed", 1), ("completed", 1)]
    assert (left["status"], left["attempts"]) == ("pending", 0)
    client.close()


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_a_worker_that_cannot_set_up_exits_rather_than_take_jobs_it_cannot_run(
    redis_url: str, tmp_path: Path, pool: str
) -> None:
    settings = Settings(
        **{**FAST_RECOVERY, "log_level": "INFO"},
        redis_url=redis_url,
        data_dir=tmp_path,
        queue="visionq-test-no-setup",
        worker_pool=pool,
        database_url="postgresql+psycopg://visionq@127.0.0.1:9/none",  # nobody listens: the migration fails
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "visionq", "worker"],
        env=WorkerProcess(settings).env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)

    logged = stderr.decode()
    assert process.returncode == 1
    assert "the worker process could not set up, and exits" in logged
    assert 'connection to server at "127.0.0.1", port 9 failed' in logged, "with the cause"
