"""Worker processes that die, hang or are told to stop, on real prefork workers: a poison input is
quarantined after killing two processes, a job past its time limit fails with a code and its stuck
process is replaced, repeated SIGKILLs lose nothing, and SIGTERM lets the job in hand finish. A `threads`
worker (the default pool) stuck past the hard limit fails the job and exits for its supervisor to replace it.

Jobs are caught mid-inference by a gated model (`model_factories.Gated`) that holds them until the test opens
its gate, whatever the machine's speed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import redis
from PIL import Image

from factories import cat_variants, encode
from integration.conftest import RedisFactory, StackFactory
from integration.stack import FAST_RECOVERY, WorkerProcess, submit, wait_for, wait_terminal
from model_factories import STAGES_AS_THEY_BEGIN, Gate, Spins, gated_model, hanging_model, scripted_model
from visionq.jobs import keys
from visionq.jobs.store import QUEUED_FIELD
from visionq.settings import Settings
from visionq.worker.watchdog import EXIT_STUCK

CAT_JPEG = cat_variants()["jpeg"]
RED = encode(Image.new("RGB", (40, 30), (220, 10, 10)), "PNG")
SOFT_LIMIT, HARD_LIMIT = 1.0, 8.0
#: The pool whose child processes these tests kill and watch (the default is `threads`).
PREFORK = {"worker_pool": "prefork"}
#: Seconds a test waits for a job to reach the model, or to end once nothing holds it any more.
JOB_TIMEOUT = 60.0
#: Seconds a worker told to stop may take to finish its job in hand and exit.
STOP_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Gate]:
    """A model dir with `gated` (which holds its jobs while its gate is closed), `hangs` (stuck in a blocking
    call until a signal gets it out) and `stuck` (busy in native code for hours, deaf to signals); the gate."""
    root = tmp_path_factory.mktemp("fault-models")
    hanging_model(root)
    scripted_model(root, "stuck", Spins(10**13))
    return root, gated_model(root)


def pool_pid(api: httpx.Client, job_id: str) -> int:
    """The pool process running the job (its worker id is `host:pid`)."""
    return int(api.get(f"/status/{job_id}").json()["worker_id"].rpartition(":")[2])


def in_the_model(api: httpx.Client, job_id: str, attempt: int | None = None) -> bool:
    """Whether the job's delivery (`attempt`, or any) is running its model."""
    status = api.get(f"/status/{job_id}").json()
    return (status["status"], status["stage"]) == ("processing", "inference") and attempt in {None, status["attempts"]}


def held_by_another(api: httpx.Client, job_ids: list[str], killed: set[str]) -> str | None:
    """The worker id of a process holding one of the jobs in the model, if it is none of the `killed` ones."""
    for job_id in job_ids:
        status = api.get(f"/status/{job_id}").json()
        if status["stage"] == "inference" and status["worker_id"] not in killed:
            return str(status["worker_id"])
    return None


def test_an_input_that_kills_two_worker_processes_is_quarantined(
    start_stack: StackFactory, models: tuple[Path, Gate]
) -> None:
    root, gate = models
    _, _, server = start_stack(
        "poison", model_dir=root, warm_models=["latest", "gated"], **PREFORK, **STAGES_AS_THEY_BEGIN
    )
    with httpx.Client(base_url=server.url, timeout=30) as api:
        with gate.closed():
            job_id = submit(api, RED, model_version="gated").json()["job_id"]
            for attempt in (1, 2):  # as an out-of-memory kill or a crash in native code would
                wait_for(partial(in_the_model, api, job_id, attempt), JOB_TIMEOUT, f"delivery {attempt} in the model")
                os.kill(pool_pid(api, job_id), signal.SIGKILL)
            final = wait_terminal(api, job_id, timeout=JOB_TIMEOUT)
        letters = {entry["job_id"]: entry for entry in api.get("/admin/dlq").json()}
        healthy = submit(api, CAT_JPEG).json()["job_id"]
        after = wait_terminal(api, healthy, timeout=JOB_TIMEOUT)

    assert final["status"] == "failed"
    assert final["error"]["code"] == "poison_input"
    assert final["attempts"] == 3, "the third delivery quarantined it without running it"
    evidence = letters[job_id]["crashes"]
    assert [crash["attempt"] for crash in evidence] == [1, 2]
    assert {crash["stage"] for crash in evidence} == {"inference"}
    assert letters[job_id]["error"]["code"] == "poison_input"
    assert after["status"] == "completed", "the fleet goes on with other jobs"


def test_repeated_sigkills_of_the_whole_worker_lose_no_job(
    start_stack: StackFactory, models: tuple[Path, Gate]
) -> None:
    root, gate = models
    # Kills can land on the same job more than once: enough attempts that every job must complete. A job a killed
    # worker held waits for the restarts (all three, on a loaded machine) longer than FAST_RECOVERY's
    # stale_job_after, and the sweeper would rightly give it up.
    settings, worker, server = start_stack(
        "kills",
        model_dir=root,
        warm_models=["gated"],
        max_attempts=10,
        stale_job_after=120,
        **PREFORK,
        **STAGES_AS_THEY_BEGIN,
    )
    client = redis.Redis.from_url(settings.state_url, decode_responses=True)
    with httpx.Client(base_url=server.url, timeout=30) as api, client:
        with gate.closed():
            job_ids = [
                submit(api, RED, model_version="gated", priority=p).json()["job_id"]
                for p in ("low", "normal", "high", "normal", "urgent", "low")
            ]
            killed: set[str] = set()
            for _ in range(3):
                # A job held by the worker started last: the one a killed process held still reads as in the model.
                killed.add(
                    wait_for(partial(held_by_another, api, job_ids, killed), JOB_TIMEOUT, "a job held by the worker")
                )
                worker.kill()
                worker.start()
        finals = [wait_terminal(api, job_id, timeout=120) for job_id in job_ids]
        results = [api.get(f"/result/{job_id}").json() for job_id in job_ids]

        failures = {
            final["job_id"]: (final["attempts"], final.get("error"))
            for final in finals
            if final["status"] != "completed"
        }
        assert [final["status"] for final in finals] == ["completed"] * len(job_ids), failures
        assert max(final["attempts"] for final in finals) >= 2, "the kills hit jobs in hand"
        assert all(result["predictions"][0]["class_name"] == "red" for result in results)
        assert not any(client.sismember(keys.PROCESSING_JOBS, job_id) for job_id in job_ids)
        assert not any(client.exists(keys.image(job_id)) for job_id in job_ids)


@pytest.fixture(scope="module")
def limited(start_stack: StackFactory, models: tuple[Path, Gate]) -> Iterator[httpx.Client]:
    _, _, server = start_stack(
        "time-limits",
        model_dir=models[0],
        job_soft_time_limit=SOFT_LIMIT,
        job_time_limit=HARD_LIMIT,
        **PREFORK,
        **STAGES_AS_THEY_BEGIN,
    )
    with httpx.Client(base_url=server.url, timeout=30) as api:
        yield api


def test_a_job_past_its_soft_time_limit_fails_with_a_code(limited: httpx.Client) -> None:
    # Its model would wait for ever: only the soft limit's signal ends it.
    job_id = submit(limited, RED, model_version="hangs").json()["job_id"]
    final = wait_terminal(limited, job_id, timeout=JOB_TIMEOUT)

    assert final["status"] == "failed"
    assert final["error"]["code"] == "time_limit_exceeded"
    assert f"{SOFT_LIMIT:g} s" in final["error"]["message"]
    assert final["attempts"] == 1, "a job that hung is not run again on another worker"
    assert job_id in {entry["job_id"] for entry in limited.get("/admin/dlq").json()}


def test_a_process_stuck_past_the_hard_time_limit_is_replaced(limited: httpx.Client) -> None:
    stuck = submit(limited, RED, model_version="stuck").json()["job_id"]
    wait_for(lambda: in_the_model(limited, stuck), JOB_TIMEOUT, "the stuck job to run")
    stuck_pid = pool_pid(limited, stuck)
    final = wait_terminal(limited, stuck, timeout=HARD_LIMIT + JOB_TIMEOUT)
    following = submit(limited, CAT_JPEG).json()["job_id"]
    after = wait_terminal(limited, following, timeout=JOB_TIMEOUT)

    assert final["status"] == "failed"
    assert final["error"]["code"] == "time_limit_exceeded"
    assert f"{HARD_LIMIT:g} s" in final["error"]["message"]
    assert after["status"] == "completed"
    assert pool_pid(limited, following) != stuck_pid, "the stuck process was replaced"
    with pytest.raises(ProcessLookupError):
        os.kill(stuck_pid, 0)


def test_a_threads_worker_stuck_past_the_hard_time_limit_fails_the_job_and_exits_to_be_replaced(
    start_stack: StackFactory, models: tuple[Path, Gate]
) -> None:
    _, worker, server = start_stack(
        "time-limits-threads",
        model_dir=models[0],
        worker_pool="threads",
        job_soft_time_limit=SOFT_LIMIT,
        job_time_limit=HARD_LIMIT,
        **STAGES_AS_THEY_BEGIN,
    )
    with httpx.Client(base_url=server.url, timeout=30) as api:
        # Busy in native code: the soft limit's interruption cannot land, only the hard limit ends it.
        stuck = submit(api, RED, model_version="stuck").json()["job_id"]
        wait_for(lambda: in_the_model(api, stuck), JOB_TIMEOUT, "the stuck job to run")
        final = wait_terminal(api, stuck, timeout=HARD_LIMIT + JOB_TIMEOUT)
        assert worker.process is not None
        exited = worker.process.wait(JOB_TIMEOUT)
        worker.start()  # as its supervisor would
        after = wait_terminal(api, submit(api, CAT_JPEG).json()["job_id"], timeout=JOB_TIMEOUT)

    assert final["status"] == "failed"
    assert final["error"]["code"] == "time_limit_exceeded"
    assert f"{HARD_LIMIT:g} s" in final["error"]["message"]
    assert exited == EXIT_STUCK
    assert after["status"] == "completed"


def test_sigterm_lets_the_job_in_hand_finish_and_leaves_the_queue_to_others(
    start_stack: StackFactory, models: tuple[Path, Gate]
) -> None:
    root, gate = models
    settings, worker, server = start_stack(
        "warm-shutdown", model_dir=root, warm_models=["gated"], **PREFORK, **STAGES_AS_THEY_BEGIN
    )
    client = redis.Redis.from_url(settings.state_url, decode_responses=True)
    with httpx.Client(base_url=server.url, timeout=30) as api, client:
        with gate.closed():
            in_hand = submit(api, RED, model_version="gated").json()["job_id"]
            queued = [submit(api, RED, model_version="gated").json()["job_id"] for _ in range(2)]
            wait_for(lambda: in_the_model(api, in_hand), JOB_TIMEOUT, "the job in hand")
            # Celery's remote-control subscription, the only pattern one on the stack's Redis: the worker drops it
            # once it has stopped taking jobs, before it waits for the one in hand.
            assert client.pubsub_numpat() == 1
            assert worker.process is not None
            os.kill(worker.process.pid, signal.SIGTERM)  # as Kubernetes and Docker stop it: the main process only
            wait_for(lambda: client.pubsub_numpat() == 0, STOP_TIMEOUT, "the worker to stop consuming")
            assert in_the_model(api, in_hand), "still in hand when the worker stopped consuming"
        assert worker.process.wait(STOP_TIMEOUT) == 0
        finished = api.get(f"/status/{in_hand}").json()
        waiting = [api.get(f"/status/{job_id}").json() for job_id in queued]

        other = WorkerProcess(settings)
        other.start()
        try:
            taken_over = [wait_terminal(api, job_id, timeout=JOB_TIMEOUT) for job_id in queued]
        finally:
            other.stop()

    assert (finished["status"], finished["attempts"]) == ("completed", 1)
    assert [status["status"] for status in waiting] == ["pending", "pending"]
    assert [(status["status"], status["attempts"]) for status in taken_over] == [("completed", 1)] * 2


def test_a_queued_job_whose_message_was_lost_is_queued_again(start_stack: StackFactory) -> None:
    settings, worker, server = start_stack("lost-message", requeue_lost_after=1.0)
    client = redis.Redis.from_url(settings.state_url, decode_responses=True)
    worker.stop()
    queue = keys.priority_list(settings.queue, 3)
    with httpx.Client(base_url=server.url, timeout=30) as api, client:
        # `unqueued` first: the sweep that finds `lost` old enough to queue again finds it old enough too.
        unqueued, lost, kept = (submit(api, CAT_JPEG, priority="high").json()["job_id"] for _ in range(3))
        # As a worker's fetch cut off by a Redis restart would: the message is gone, the job still queued.
        # `unqueued` stands for a job of another queue sharing the Redis: not this worker's to queue again.
        for job_id in (lost, unqueued):
            [message] = [m for m in client.lrange(queue, 0, -1) if job_id in m]
            assert client.lrem(queue, 1, str(message)) == 1
        client.hset(keys.status(unqueued), QUEUED_FIELD, "visionq-test-another-queue")
        worker.start()
        finals = [wait_terminal(api, job_id, timeout=JOB_TIMEOUT) for job_id in (lost, kept)]
        # Queued after that sweep: had it queued `unqueued` again, the worker would have taken it before this one.
        later = wait_terminal(api, submit(api, CAT_JPEG, priority="high").json()["job_id"], timeout=JOB_TIMEOUT)
        left = api.get(f"/status/{unqueued}").json()

    assert [(f["status"], f["attempts"]) for f in finals] == [("completed", 1), ("completed", 1)]
    assert later["status"] == "completed"
    assert (left["status"], left["attempts"]) == ("pending", 0)


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_a_worker_that_cannot_set_up_exits_rather_than_take_jobs_it_cannot_run(
    new_redis: RedisFactory, tmp_path: Path, pool: str
) -> None:
    settings = Settings(
        **{**FAST_RECOVERY, "log_level": "INFO"},
        redis_url=new_redis(f"no-setup-{pool}"),
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


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_a_worker_that_runs_jobs_in_its_main_process_sets_it_up_once(
    new_redis: RedisFactory, tmp_path: Path, pool: str
) -> None:
    """Celery's solo pool announces its process as a pool child too: set up again, the process ran two
    housekeepings, loaded its models twice, and its archiver read back from Redis the results it had been handed."""
    settings = Settings(
        **{**FAST_RECOVERY, "log_level": "INFO"},
        redis_url=new_redis(f"set-up-once-{pool}"),
        data_dir=tmp_path,
        queue=f"visionq-test-set-up-once-{pool}",
        worker_pool=pool,
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "visionq", "worker"],
            env=WorkerProcess(settings).env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # The worker's line once its pool is up (worker/signals.py): every set-up is done by then.
        ready = re.compile(rf"visionq-classify-{process.pid}@\S+ ready: queue ")
        wait_for(lambda: ready.search(log.read_text()), 60, "the worker's start")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)

    assert log.read_text().count("worker process ready") == 1
