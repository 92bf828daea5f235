"""Idempotency-Key on POST /classify against the real stack: replays, conflicts, and released keys."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
import redis.asyncio

from factories import bad_inputs, cat_variants
from integration.records import create, new_record
from integration.stack import submit
from visionq import Client
from visionq.jobs import keys
from visionq.jobs.idempotency import RESERVATION_TTL, IdempotencyKeys, answer_entry
from visionq.jobs.records import ANONYMOUS

CAT = cat_variants()["jpeg"]
OTHER_CAT = cat_variants()["png"]

ONE_REDIS = keys.Shards()


def post(api: httpx.Client, key: str, image: bytes = CAT, **fields: object) -> httpx.Response:
    data = {name: str(value) for name, value in fields.items()}
    return api.post("/classify", files={"file": ("cat", image)}, data=data, headers={"Idempotency-Key": key})


def test_the_same_key_and_request_give_back_the_original_job(api: httpx.Client) -> None:
    key = str(uuid.uuid4())
    first = post(api, key, priority="high")
    again = post(api, key, priority="high")

    assert (first.status_code, first.json()["status"], first.json()["priority"]) == (202, "pending", "high")
    assert "Idempotent-Replayed" not in first.headers
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["Location"] == first.headers["Location"] == f"/status/{first.json()['job_id']}"


def test_the_same_key_with_a_different_request_is_a_conflict(api: httpx.Client) -> None:
    key = str(uuid.uuid4())
    original = post(api, key)
    assert (original.status_code, original.json()["status"]) == (202, "pending")

    for changed in (post(api, key, image=OTHER_CAT), post(api, key, priority="urgent"), post(api, key, top_k=3)):
        assert changed.status_code == 409, changed.text
        assert changed.json()["code"] == "conflict"
        assert "different request" in changed.json()["detail"]


def test_without_a_key_or_with_another_key_each_request_is_a_new_job(api: httpx.Client) -> None:
    ids = {
        submit(api, CAT).json()["job_id"],
        submit(api, CAT).json()["job_id"],
        post(api, str(uuid.uuid4())).json()["job_id"],
        post(api, str(uuid.uuid4())).json()["job_id"],
    }
    assert len(ids) == 4


def test_a_refused_request_releases_its_key_for_a_retry(api: httpx.Client, stack_redis: redis.Redis) -> None:
    key = str(uuid.uuid4())
    refused = post(api, key, image=bad_inputs()["truncated_jpeg"])
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_image")
    assert stack_redis.exists(keys.idempotency(ANONYMOUS, key, ONE_REDIS)) == 0

    retried = post(api, key)
    assert (retried.status_code, retried.json()["status"]) == (202, "pending")
    assert "Idempotent-Replayed" not in retried.headers, "a new job, not a replay of the refusal"
    assert stack_redis.ttl(keys.idempotency(ANONYMOUS, key, ONE_REDIS)) > 23 * 3600, "remembered for 24 h"


def test_concurrent_requests_with_one_key_make_one_job(api: httpx.Client) -> None:
    key = str(uuid.uuid4())
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: post(api, key), range(4)))

    assert [answer.status_code for answer in answers].count(202) == 1
    assert {answer.status_code for answer in answers} <= {200, 202, 409}
    job_ids = {answer.json()["job_id"] for answer in answers if answer.status_code in (200, 202)}
    assert len(job_ids) == 1
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["code"] == "conflict"
            assert "still being handled" in answer.json()["detail"]
            assert answer.headers["Retry-After"] == "1"


def test_a_reservation_its_request_could_not_release_frees_itself(redis_url: str) -> None:
    """A request that reserved a key and then lost Redis cannot release it; the reservation must not hold the
    key for 24 hours, or every retry of that submit would be refused (found by the soak)."""

    record, key = new_record(), str(uuid.uuid4())

    async def reserve() -> int:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            assert await IdempotencyKeys(client).reserve(ANONYMOUS, key, "a request") is None
            return int(await client.ttl(keys.idempotency(ANONYMOUS, key, ONE_REDIS)))
        finally:
            await client.aclose()

    while_reserved = asyncio.run(reserve())
    assert create(
        redis_url, record, remember=answer_entry(ANONYMOUS, key, "a request", {"job_id": "j"}, ONE_REDIS)
    ).accepted
    client = redis.Redis.from_url(redis_url)
    once_answered = client.ttl(keys.idempotency(ANONYMOUS, key, ONE_REDIS))
    client.close()

    assert 0 < while_reserved <= RESERVATION_TTL
    assert once_answered > 23 * 3600


@pytest.mark.parametrize(("key", "kind"), [("k" * 256, "string_too_long"), ("", "string_too_short")])
def test_an_empty_key_or_one_longer_than_255_characters_is_a_validation_problem(
    api: httpx.Client, key: str, kind: str
) -> None:
    answer = post(api, key)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["code"] == "validation_error"
    assert [(e["loc"], e["type"]) for e in problem["errors"]] == [(["header", "Idempotency-Key"], kind)]


def test_a_key_of_255_characters_is_taken(api: httpx.Client) -> None:
    assert post(api, "k" * 255).status_code == 202


def test_the_sdk_sends_the_key(api: httpx.Client) -> None:
    key = str(uuid.uuid4())
    with Client(str(api.base_url)) as client:
        first = client.submit(CAT, idempotency_key=key)
        again = client.submit(CAT, idempotency_key=key)
        other = client.submit(CAT)
    assert again == first
    assert other.job_id != first.job_id
