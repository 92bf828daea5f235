"""Every refusal of API.md through the real API: the right status and code, no trace, service healthy."""

from __future__ import annotations

import select
import socket
from typing import Any

import httpx
import pytest

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
    settings, _, server = start_stack("small-uploads", max_upload_bytes=100_000)
    with httpx.Client(base_url=server.url) as client:
        response = submit(client, b"\xff\xd8\xff" + bytes(300_000))
        assert_problem(response, 413, "payload_too_large")
        assert submit(client, CAT_JPEG).status_code == 202

    # A chunked upload with no declared length is cut off while it streams: the answer comes back
    # long before the 50 MB the client would send.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        boundary = "vq"
        sock.sendall(
            b"POST /classify HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
            + f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode()
        )
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'.encode()
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        chunk = b"\xff" * 65536
        sent = 0
        while sent < 50_000_000 and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 5_000_000
    assert settings.max_upload_bytes == 100_000
