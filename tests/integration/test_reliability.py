"""Priorities, a worker killed mid-job, result expiry, and Redis going away."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import redis

from factories import cat_variants, chelsea, encode
from integration.conftest import StackFactory
from integration.stack import ApiServer, submit, wait_for, wait_terminal
from visionq.embedded import free_port
from visionq.jobs import keys
from visionq.settings import Settings

CAT_JPEG = cat_variants()["jpeg"]


def completion_order(client: httpx.Client, job_ids: list[str]) -> list[str]:
    finished = {job_id: wait_terminal(client, job_id, timeout=120)["updated_at"] for job_id in job_ids}
    return sorted(job_ids, key=lambda job_id: finished[job_id])


def test_urgent_job_overtakes_queued_low_ones(start_stack: StackFactory) -> None:
    _, _, server = start_stack("priorities", warm_models=["efficientnet-lite2"])
    with httpx.Client(base_url=server.url, timeout=30) as client, ThreadPoolExecutor(4) as pool:
        lows = list(
            pool.map(
                lambda _: submit(client, CAT_JPEG, model_version="efficientnet-lite2", priority="low").json()["job_id"],
                range(20),
            )
        )
        urgent = submit(client, CAT_JPEG, model_version="efficientnet-lite2", priority="urgent").json()["job_id"]
        order = completion_order(client, [*lows, urgent])

    # Lows finish while the rest are still being submitted, plus the one in hand; the urgent job
    # then goes next. Without priorities it would finish last (index 20).
    assert order.index(urgent) < 10, f"urgent finished at position {order.index(urgent) + 1} of 21"


def test_high_before_normal_before_low(start_stack: StackFactory) -> None:
    _, _, server = start_stack("priority-classes", warm_models=["efficientnet-lite2"])
    with httpx.Client(base_url=server.url, timeout=30) as client:
        # Occupy the worker first so the rest queue up behind it.
        blockers = [
            submit(client, CAT_JPEG, model_version="efficientnet-lite2", priority="urgent").json()["job_id"]
            for _ in range(4)
        ]
        by_priority = {
            priority: [
                submit(client, CAT_JPEG, model_version="efficientnet-lite2", priority=priority).json()["job_id"]
                for _ in range(4)
            ]
            for priority in ("low", "normal", "high")
        }
        order = completion_order(client, [*blockers, *(j for ids in by_priority.values() for j in ids)])

    mean_rank = {p: sum(order.index(j) for j in ids) / len(ids) for p, ids in by_priority.items()}
    assert mean_rank["high"] < mean_rank["normal"] < mean_rank["low"], mean_rank


def test_job_survives_its_worker_being_killed_mid_job(start_stack: StackFactory) -> None:
    # The job waits for the worker's restart; on a loaded machine that can take longer than FAST_RECOVERY's
    # stale_job_after, and the sweeper would rightly give it up.
    settings, worker, server = start_stack("kill", warm_models=["efficientnet-lite2"], stale_job_after=120)
    big_photo = encode(chelsea().resize((3600, 2400)), "JPEG", quality=95)
    client = redis.Redis.from_url(settings.broker_url, decode_responses=True)
    with httpx.Client(base_url=server.url, timeout=30) as api:
        job_id = submit(api, big_photo, model_version="efficientnet-lite2").json()["job_id"]
        wait_for(lambda: api.get(f"/status/{job_id}").json()["status"] == "processing", 30, "the job to start", 0.002)
        worker.kill()
        assert api.get(f"/status/{job_id}").json()["status"] == "processing"

        worker.start()
        final = wait_terminal(api, job_id, timeout=60)
        result = api.get(f"/result/{job_id}").json()

    assert final["status"] == "completed"
    assert final["attempts"] == 2
    assert result["predictions"][0]["class_id"] in {281, 282, 285}
    assert client.exists(keys.image(job_id)) == 0, "the image is deleted once processed"
    assert not client.sismember(keys.PROCESSING_JOBS, job_id)
    client.close()


def test_after_its_ttl_the_result_leaves_redis_and_is_served_from_the_archive(
    start_stack: StackFactory, redis_client: redis.Redis
) -> None:
    _, _, server = start_stack("expiry", result_ttl=2)
    with httpx.Client(base_url=server.url, timeout=30) as api:
        job_id = submit(api, CAT_JPEG).json()["job_id"]
        wait_terminal(api, job_id)
        live = api.get(f"/result/{job_id}")
        assert live.status_code == 200
        assert 0 < redis_client.ttl(keys.result(job_id)) <= 2

        wait_for(lambda: not redis_client.exists(keys.status(job_id), keys.result(job_id)), 10, "the TTL", 0.2)
        assert api.get(f"/status/{job_id}").status_code == 404, "API.md: 404 for expired ids"
        archived = api.get(f"/result/{job_id}")
        assert archived.status_code == 200
        assert archived.json() == live.json()


def test_redis_down_gives_503_fast_and_readiness_says_so(make_settings: object) -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=0.5)
    server = ApiServer(settings)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as api:
            response = submit(api, CAT_JPEG)
            assert response.status_code == 503
            assert response.json()["code"] == "broker_unavailable"
            assert int(response.headers["retry-after"]) > 0
            assert response.elapsed.total_seconds() < 5

            ready = api.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["status"] == "down"
            assert api.get("/health").status_code == 200
    finally:
        server.stop()


def test_cancelling_a_queued_job_means_it_never_runs(start_stack: StackFactory) -> None:
    _, _, server = start_stack("cancel", warm_models=["efficientnet-lite2"])
    with httpx.Client(base_url=server.url, timeout=30) as api:
        lite0_inferences = _inference_count(api, "efficientnet-lite0@1")
        busy = [submit(api, CAT_JPEG, model_version="efficientnet-lite2").json()["job_id"] for _ in range(6)]
        queued = submit(api, CAT_JPEG, priority="low").json()["job_id"]

        response = api.delete(f"/jobs/{queued}")  # at once: six jobs are ahead of it
        assert response.status_code == 200
        assert response.json()["status"] == "cancelled"
        for job_id in busy:
            wait_terminal(api, job_id)

        status = api.get(f"/status/{queued}").json()
        assert (status["status"], status["attempts"], status["error"]["code"]) == ("cancelled", 0, "cancelled")
        assert _inference_count(api, "efficientnet-lite0@1") == lite0_inferences, "it never reached a model"
        result = api.get(f"/result/{queued}")
        assert result.status_code == 200
        assert result.json()["status"] == "cancelled"
        finished = api.delete(f"/jobs/{busy[0]}")
        assert finished.status_code == 409
        assert finished.json()["code"] == "conflict"
        assert api.delete("/jobs/unknown").status_code == 404


def test_cancelling_a_running_job_stops_it_at_the_next_stage(start_stack: StackFactory) -> None:
    _, _, server = start_stack("cancel-running", warm_models=["efficientnet-lite2"])
    big_photo = encode(chelsea().resize((3600, 2400)), "JPEG", quality=95)
    with httpx.Client(base_url=server.url, timeout=30) as api:
        job_id = submit(api, big_photo, model_version="efficientnet-lite2").json()["job_id"]
        wait_for(lambda: api.get(f"/status/{job_id}").json()["status"] == "processing", 30, "the job to start", 0.002)
        assert api.delete(f"/jobs/{job_id}").status_code == 200

        # A later job still runs: the worker dropped the cancelled one and moved on.
        wait_terminal(api, submit(api, CAT_JPEG).json()["job_id"])
        status = api.get(f"/status/{job_id}").json()
        assert status["status"] == "cancelled"
        assert status["progress"] < 100
        assert api.get(f"/result/{job_id}").json()["status"] == "cancelled"


def _inference_count(api: httpx.Client, model_ref: str) -> float:
    """`visionq_model_inference_seconds_count` of one model version, 0 before its first inference."""
    prefix = f'visionq_model_inference_seconds_count{{model_version="{model_ref}"}} '
    lines = [line for line in api.get("/metrics").text.splitlines() if line.startswith(prefix)]
    return float(lines[0].split()[-1]) if lines else 0.0
