"""Every refusal of API.md through the real API: the right status and code, no trace, service healthy."""

from __future__ import annotations

import json
import select
import socket
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from factories import bad_inputs, cat_variants
from integration.conftest import StackFactory
from integration.stack import submit

CAT_JPEG = cat_variants()["jpeg"]


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == f"urn:visionq:problem:{code}"
    assert body["title"]
    assert body["detail"]
    for leak in ("Traceback", "/work/", "site-packages"):
        assert leak not in response.text
    return body


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("empty", 400, "invalid_image"),
        ("truncated_jpeg", 400, "invalid_image"),
        ("corrupt_png", 400, "invalid_image"),
        ("text", 415, "unsupported_media_type"),
        ("pdf", 415, "unsupported_media_type"),
        ("bomb_png", 413, "image_too_large"),
    ],
)
def test_bad_image_is_refused_with_its_code(api: httpx.Client, name: str, status: int, code: str) -> None:
    assert_problem(submit(api, bad_inputs()[name], filename="cat.jpg"), status, code)
    assert api.get("/health").json() == {"status": "ok"}


def test_file_name_and_declared_type_do_not_decide_the_type(api: httpx.Client) -> None:
    response = api.post("/classify", files={"file": ("cat.png", bad_inputs()["text"], "image/png")})
    assert_problem(response, 415, "unsupported_media_type")
    response = api.post("/classify", files={"file": ("notes.txt", CAT_JPEG, "text/plain")})
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"model_version": "resnet-9000"}, "model_not_found"),
        ({"model_version": "efficientnet-lite0@7"}, "model_not_found"),
        ({"model_version": "efficientnet-lite0@x"}, "validation_error"),
        ({"model_version": "efficientnet-lite0@-1"}, "validation_error"),
        ({"model_version": "efficientnet-lite0@"}, "validation_error"),
        ({"model_version": "@1"}, "validation_error"),
        ({"model_version": "a@b@c"}, "validation_error"),
        ({"model_version": "bad name!"}, "validation_error"),
        ({"top_k": "0"}, "validation_error"),
        ({"top_k": "21"}, "validation_error"),
        ({"top_k": "many"}, "validation_error"),
        ({"priority": "whenever"}, "validation_error"),
        ({"callback_url": "ftp://example.com/hook"}, "validation_error"),
        ({"callback_url": "not a url"}, "validation_error"),
        ({"callback_url": "http://127.0.0.1:9/hook"}, "validation_error"),
        ({"callback_url": "http://169.254.169.254/latest"}, "validation_error"),
    ],
)
def test_bad_form_field_is_a_422(api: httpx.Client, fields: dict[str, str], code: str) -> None:
    assert_problem(submit(api, CAT_JPEG, **fields), 422, code)


def test_missing_file_is_a_422(api: httpx.Client) -> None:
    response = api.post("/classify", files={"other": ("x", b"abc")}, data={"top_k": "3"})
    body = assert_problem(response, 422, "validation_error")
    assert "file" in body["detail"]


@pytest.mark.parametrize("path", ["/classify", "/batches"])
@pytest.mark.parametrize(
    "parts",
    [
        pytest.param({"priority": (None, "high")}, id="no-file-part"),
        pytest.param({"file": (None, "cat.jpg"), "priority": (None, "high")}, id="file-as-text"),
    ],
)
def test_a_form_without_an_image_part_is_a_422(api: httpx.Client, path: str, parts: dict[str, Any]) -> None:
    body = assert_problem(api.post(path, files=parts), 422, "validation_error")
    assert "`file`" in body["detail"]


def test_non_multipart_body_is_a_415(api: httpx.Client) -> None:
    response = api.post("/classify", content=CAT_JPEG, headers={"content-type": "image/jpeg"})
    assert_problem(response, 415, "unsupported_media_type")


def test_unknown_ids_routes_and_methods(api: httpx.Client) -> None:
    assert_problem(api.get("/status/00000000-0000-4000-8000-000000000000"), 404, "not_found")
    assert_problem(api.get("/result/nope"), 404, "not_found")
    assert_problem(api.get("/no/such/route"), 404, "not_found")
    assert_problem(api.delete("/classify"), 405, "validation_error")


def test_a_wrong_method_names_every_method_the_path_takes(api: httpx.Client) -> None:
    for method, path, allowed in [
        ("GET", "/classify", "POST"),
        ("PUT", "/jobs/some-id", "DELETE"),
        ("OPTIONS", "/admin/dlq", "DELETE, GET, HEAD"),
        ("POST", "/admin/models/latest", "DELETE, PUT"),
    ]:
        response = api.request(method, path)
        assert_problem(response, 405, "validation_error")
        assert response.headers["allow"] == allowed, (method, path)
    assert api.get("/").headers["content-type"].startswith("text/html"), "the page is still at /"
    assert api.get("/web/app.js").status_code == 200


def test_declared_oversized_upload_is_refused_before_it_is_read(start_stack: StackFactory) -> None:
    _, _, server = start_stack("small-uploads", max_upload_bytes=100_000)
    with httpx.Client(base_url=server.url) as client:
        response = submit(client, b"\xff\xd8\xff" + bytes(300_000))
        assert_problem(response, 413, "payload_too_large")
        assert submit(client, CAT_JPEG).status_code == 202
        refusals_before = refusals(client, 413)

        # A chunked upload declares no length, and here it never ends: it is cut off while it streams, the answer
        # coming while the client is still sending.
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                b"POST /classify HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: multipart/form-data; boundary=vq\r\n\r\n"
            )
            head = b'--vq\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'
            sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
            stream_until_answered(sock, b"\xff" * 65536)
            status_line, body = read_response(sock)

        assert status_line.startswith(b"HTTP/1.1 413"), status_line
        assert json.loads(body)["code"] == "payload_too_large"
        assert refusals(client, 413) == refusals_before + 1
        assert client.get("/health").json() == {"status": "ok"}
        assert submit(client, CAT_JPEG).status_code == 202, "the service goes on"


#: Bytes a client streams before a test gives up on the service answering: 500 times the stack's limit.
STREAM_GUARD = 50_000_000


def stream_until_answered(sock: socket.socket, chunk: bytes) -> None:
    """Send `chunk` after `chunk` until the service answers or stops reading; fail after STREAM_GUARD bytes."""
    sent = 0
    while not select.select([sock], [], [], 0)[0]:
        assert sent < STREAM_GUARD, f"the service read {sent} bytes of an upload over its limit without a word"
        try:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            return
        sent += len(chunk)


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """The status line and the body of the response on `sock` (the socket's timeout is the guard)."""
    received = receive(sock)
    while b"\r\n\r\n" not in received:
        received += receive(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *fields = head.split(b"\r\n")
    length = next(
        int(value) for name, _, value in (f.partition(b":") for f in fields) if name.lower() == b"content-length"
    )
    while len(body) < length:
        body += receive(sock)
    return status_line, body


def receive(sock: socket.socket) -> bytes:
    data = sock.recv(65536)
    assert data, "the connection closed before the whole answer came"
    return data


def refusals(client: httpx.Client, status: int) -> float:
    """`visionq_http_requests_total` of `POST /classify` answered with `status`."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "visionq_http_requests_total"
        and sample.labels.get("route") == "/classify"
        and sample.labels.get("status") == str(status)
    )
