"""Callback signing and one delivery attempt's decisions (httpx's MockTransport stands in for the receiver;
no sockets are opened, and only literal public addresses are used, so nothing is resolved)."""

from __future__ import annotations

import httpx
import pytest

from visionq.callbacks.delivery import MAX_BACKOFF, Attempt, backoff, deliver, delivery_id
from visionq.callbacks.signing import sign, verify

PUBLIC = "http://93.184.216.34/hook"


def attempt_with(handler: httpx.MockTransport, url: str = PUBLIC, *, allow_private: bool = False) -> Attempt:
    with httpx.Client(transport=handler) as client:
        return deliver(client, url, b'{"job_id":"j"}', job_id="j", attempt=1, secret="s", allow_private=allow_private)


def test_the_signature_is_an_hmac_of_the_raw_body() -> None:
    signature = sign(b'{"a":1}', "secret")
    assert signature.startswith("sha256=")
    assert len(signature) == len("sha256=") + 64
    assert verify(b'{"a":1}', "secret", signature)
    assert not verify(b'{"a": 1}', "secret", signature)
    assert not verify(b'{"a":1}', "other", signature)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff(2.0, n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert backoff(2.0, 30) == MAX_BACKOFF


def test_every_attempt_of_a_job_shares_one_delivery_id() -> None:
    assert delivery_id("job-1") == delivery_id("job-1") != delivery_id("job-2")


def test_a_2xx_is_delivered_and_carries_the_headers() -> None:
    seen: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    attempt = attempt_with(httpx.MockTransport(receive))

    assert attempt.outcome == "delivered"
    assert attempt.status_code == 204
    (request,) = seen
    assert request.headers["x-visionq-job-id"] == "j"
    assert "x-visionq-batch-id" not in request.headers
    assert verify(request.content, "s", request.headers["x-visionq-signature"])


def test_a_batch_callback_names_the_batch_not_its_redis_key() -> None:
    seen: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    with httpx.Client(transport=httpx.MockTransport(receive)) as client:
        deliver(client, PUBLIC, b"{}", job_id="batch:{b-1}", attempt=1, secret="s", allow_private=False)

    (request,) = seen
    assert (request.headers["x-visionq-batch-id"], request.headers["x-visionq-job-id"]) == ("b-1", "batch:b-1")
    assert request.headers["x-visionq-delivery"] == delivery_id("batch:{b-1}")


def test_an_error_answer_is_a_failed_attempt_with_an_excerpt() -> None:
    attempt = attempt_with(httpx.MockTransport(lambda _: httpx.Response(502, text="bad gateway")))
    assert attempt.outcome == "failed"
    assert attempt.error == "HTTP 502: bad gateway"


@pytest.mark.parametrize(
    "target", ["http://169.254.169.254/latest/meta-data", "http://127.0.0.1:8000/", "http://10.0.0.1/"]
)
def test_a_redirect_to_a_private_address_is_refused_before_it_is_followed(target: str) -> None:
    seen: list[str] = []

    def receive(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"location": target})

    attempt = attempt_with(httpx.MockTransport(receive))

    assert attempt.outcome == "refused"
    assert seen == [PUBLIC]


def test_a_private_target_is_refused_without_a_request() -> None:
    seen: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    attempt = attempt_with(httpx.MockTransport(receive), "http://127.0.0.1/")
    assert attempt.outcome == "refused"
    assert not seen
