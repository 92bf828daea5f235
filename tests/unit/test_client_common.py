"""What the sync and async SDK clients share: URLs, credentials, the upload part, messages, and waiting."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest

from visionq.client import FailureBody, JobAccepted, JobTimeout, ResultBody, StatusBody
from visionq.client.common import (
    HOLD_MAX,
    POLL_FIRST_DELAY,
    POLL_MAX_DELAY,
    Watch,
    auth_headers,
    image_part,
    job_id,
    parse_ws_message,
    resolve_url,
    result_call,
    submit_call,
    ws_base,
    ws_job_url,
)

STATUS = {
    "job_id": "job-1",
    "status": "processing",
    "progress": 25,
    "stage": "preprocessing",
    "created_at": "2026-11-26T21:30:00.123Z",
    "updated_at": "2026-11-26T21:30:01.123Z",
    "worker_id": "vm:1",
    "attempts": 1,
    "model_version": "efficientnet-lite0@1",
    "priority": "normal",
}
RESULT = {
    "job_id": "job-1",
    "status": "completed",
    "predictions": [{"class_id": 285, "class_name": "Egyptian cat", "confidence": 0.8}],
    "confidence_score": 0.8,
    "processing_time": 0.05,
    "model_version": "efficientnet-lite0@1",
    "created_at": "2026-11-26T21:30:00.123Z",
    "completed_at": "2026-11-26T21:30:01.123Z",
    "metadata": {"image": {"width": 451, "height": 300, "format": "JPEG"}, "queue_time": 0.1, "total_time": 1.0},
}


def status(**changes: object) -> StatusBody:
    return StatusBody.model_validate({**STATUS, **changes})


def test_the_url_argument_comes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIONQ_URL", "http://from-env:1")
    assert resolve_url("http://explicit:2") == "http://explicit:2"


def test_the_url_falls_back_to_visionq_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIONQ_URL", "http://from-env:1")
    assert resolve_url(None) == "http://from-env:1"


def test_the_url_falls_back_to_the_local_service() -> None:
    assert resolve_url(None) == "http://127.0.0.1:8000"


def test_the_url_falls_back_to_a_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("VISIONQ_URL=http://from-dotenv:3\n")  # the working directory, see conftest
    assert resolve_url(None) == "http://from-dotenv:3"


def test_credentials_become_headers() -> None:
    assert auth_headers(None, None) == {}
    assert auth_headers("key-1", None) == {"X-API-Key": "key-1"}
    assert auth_headers(None, "jwt-1") == {"Authorization": "Bearer jwt-1"}
    assert auth_headers("key-1", "jwt-1") == {"X-API-Key": "key-1", "Authorization": "Bearer jwt-1"}


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000"),
        ("https://vq.example.com/api/", "wss://vq.example.com/api/"),
        ("wss://vq.example.com", "wss://vq.example.com"),
    ],
)
def test_the_websocket_base_follows_the_api_url(url: str, base: str) -> None:
    assert ws_base(url) == base


def test_a_url_that_is_not_http_cannot_be_followed() -> None:
    with pytest.raises(ValueError, match="use an http"):
        ws_base("ftp://vq.example.com")


def test_the_websocket_url_keeps_the_prefix_and_carries_the_credential() -> None:
    assert ws_job_url("wss://vq.example.com/api/", "job-1", None) == "wss://vq.example.com/api/ws/job-1"
    assert ws_job_url("ws://h:1", "job 1/x", "a+b&c") == "ws://h:1/ws/job%201%2Fx?token=a%2Bb%26c"


def test_a_job_is_an_id_or_what_submit_returned() -> None:
    accepted = JobAccepted.model_validate(
        {
            "job_id": "job-1",
            "status": "pending",
            "created_at": "2026-11-26T21:30:00.123Z",
            "estimated_completion": None,
            "model_version": "efficientnet-lite0@1",
            "priority": "normal",
            "links": {"status": "/status/job-1", "result": "/result/job-1", "websocket": "/ws/job-1"},
        }
    )
    assert job_id(accepted) == job_id("job-1") == "job-1"


def test_a_path_is_opened_for_the_request_and_closed_after(tmp_path: Path) -> None:
    path = tmp_path / "cat.jpg"
    path.write_bytes(b"\xff\xd8 jpeg bytes")

    with image_part(str(path)) as (name, content):
        assert name == "cat.jpg"
        assert isinstance(content, io.BufferedReader)
        assert content.read() == b"\xff\xd8 jpeg bytes"
    assert content.closed
    with image_part(path) as (name, _):
        assert name == "cat.jpg"


def test_bytes_and_file_objects_are_sent_as_they_are(tmp_path: Path) -> None:
    with image_part(b"png bytes") as part:
        assert part == ("image", b"png bytes")
    buffer = io.BytesIO(b"gif bytes")
    with image_part(buffer) as part:
        assert part == ("image", buffer)
    (tmp_path / "photo.webp").write_bytes(b"webp")
    with (tmp_path / "photo.webp").open("rb") as file, image_part(file) as (name, content):
        assert (name, content) == ("photo.webp", file)
    assert not buffer.closed, "a caller's file object is the caller's to close"


def test_anything_else_is_refused() -> None:
    with pytest.raises(TypeError, match="not int"), image_part(42):  # type: ignore[arg-type]
        pass


def test_the_submit_form_has_the_api_field_names() -> None:
    call = submit_call(("cat.jpg", b"x"), model="efficientnet-lite2", priority="high", top_k=3, callback_url=None)
    assert (call.method, call.path) == ("POST", "/classify")
    assert call.data == {"model_version": "efficientnet-lite2", "priority": "high", "top_k": "3"}
    assert call.files == {"file": ("cat.jpg", b"x")}
    with_callback = submit_call(("a", b"x"), model="latest", priority="normal", top_k=5, callback_url="https://h/cb")
    assert with_callback.data is not None
    assert with_callback.data["callback_url"] == "https://h/cb"


def test_websocket_messages_are_told_apart() -> None:
    assert isinstance(parse_ws_message(json.dumps(STATUS)), StatusBody)
    assert isinstance(parse_ws_message(json.dumps(RESULT).encode()), ResultBody)
    failure = {"job_id": "job-1", "status": "failed", "error": {"code": "invalid_image", "message": "truncated"}}
    assert isinstance(parse_ws_message(json.dumps(failure)), FailureBody)
    # A failed job's status body has an `error` too; its `stage` says it is a status.
    assert isinstance(parse_ws_message(json.dumps({**STATUS, **failure, "stage": "failed"})), StatusBody)


@pytest.mark.parametrize("message", ["not json", "[1, 2]", '{"job_id": "job-1"}'])
def test_a_message_that_is_none_of_them_is_a_value_error(message: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (json and pydantic both raise ValueError subclasses)
        parse_ws_message(message)


def test_each_new_status_is_reported_once() -> None:
    seen: list[StatusBody] = []
    watch = Watch("job-1", 10.0, seen.append)

    assert watch.take(status()) is None
    assert watch.take(status()) is None
    assert watch.observe(status(progress=50, stage="inference")) is False
    assert watch.observe(status(status="completed", progress=100, stage="completed")) is True

    assert [s.progress for s in seen] == [25, 50, 100]
    assert watch.last == seen[-1]


def test_the_outcome_ends_the_watch() -> None:
    outcome = ResultBody.model_validate(RESULT)
    assert Watch("job-1", None, None).take(outcome) is outcome


def test_polling_backs_off_up_to_a_ceiling() -> None:
    watch = Watch("job-1", None, None)
    delays = [watch.next_delay() for _ in range(20)]

    assert delays[0] == POLL_FIRST_DELAY
    assert delays == sorted(delays)
    assert delays[-1] == POLL_MAX_DELAY


def test_a_spent_deadline_raises_job_timeout_with_the_last_status() -> None:
    watch = Watch("job-1", 0.0, None)
    watch.observe(status())

    with pytest.raises(JobTimeout) as timed_out:
        watch.next_delay()

    assert timed_out.value.status == status()
    assert watch.remaining() == 0.0
    assert watch.open_timeout() == 0.0


def test_without_a_deadline_nothing_runs_out() -> None:
    watch = Watch("job-1", None, None)
    assert watch.remaining() is None
    assert watch.open_timeout() > 0


def test_a_held_result_request_asks_the_server_to_wait_and_reads_that_much_longer() -> None:
    held, plain = result_call("job-1", 20), result_call("job-1")
    base = httpx.Timeout(30.0)

    assert held.headers == {"Prefer": "wait=20"}
    assert held.timeout(base).read == 50.0
    assert (held.timeout(base).connect, held.timeout(base).write) == (30.0, 30.0)
    assert plain.headers is None
    assert plain.timeout(base) is base


def test_a_hold_never_outlasts_the_deadline() -> None:
    assert Watch("job-1", None, None).hold_seconds() == HOLD_MAX
    assert 0 < Watch("job-1", 12.5, None).hold_seconds() <= 12
    assert Watch("job-1", 0.4, None).hold_seconds() == 0


def test_a_request_the_server_held_is_asked_again_at_once() -> None:
    assert Watch("job-1", None, None).pause_after_hold(20, 20.01) == 0.0


def test_a_server_that_does_not_hold_requests_is_polled_with_growing_pauses() -> None:
    watch = Watch("job-1", None, None)
    pauses = [watch.pause_after_hold(20, 0.01) for _ in range(20)]
    unheld = [Watch("job-1", None, None).pause_after_hold(0, 0.01)]

    assert pauses[0] == POLL_FIRST_DELAY
    assert pauses == sorted(pauses)
    assert pauses[-1] == POLL_MAX_DELAY
    assert unheld == [POLL_FIRST_DELAY]


def test_a_hold_past_the_deadline_raises_job_timeout() -> None:
    watch = Watch("job-1", 0.0, None)
    watch.observe(status())

    with pytest.raises(JobTimeout) as timed_out:
        watch.pause_after_hold(20, 20.0)

    assert timed_out.value.status == status()
