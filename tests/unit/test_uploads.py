"""The streaming multipart reader of POST /classify, fed by a real Starlette Request over a fake ASGI receive."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from starlette.requests import Request
from starlette.types import Message

from visionq.api.uploads import FORM_OVERHEAD, Upload, read_upload
from visionq.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed

BOUNDARY = "visionq-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
CHUNK = 1024
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def multipart(fields: dict[str, str], file: bytes | None = None, filename: str = "cat.png", *, more: int = 0) -> bytes:
    """A multipart/form-data body, encoded by hand as RFC 7578 describes it; with `more`, that many more file
    parts follow the first, named `<n>-<filename>`, each with the file's bytes and `n` appended."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    if file is not None:
        files = [(filename, file)] + [(f"{i}-{filename}", file + bytes([i])) for i in range(1, more + 1)]
        for name, data in files:
            head = (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                "Content-Type: image/png\r\n\r\n"
            )
            parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


@dataclass
class Body:
    """An ASGI `receive` that hands out the body in chunks and counts how many it handed out."""

    data: bytes
    chunk: int = CHUNK
    handed_out: int = 0
    chunks: list[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.chunks = [self.data[i : i + self.chunk] for i in range(0, len(self.data), self.chunk)] or [b""]

    async def receive(self) -> Message:
        if self.handed_out == len(self.chunks):
            return {"type": "http.disconnect"}
        self.handed_out += 1
        more = self.handed_out < len(self.chunks)
        return {"type": "http.request", "body": self.chunks[self.handed_out - 1], "more_body": more}


def request(body: Body, content_type: str = MULTIPART, content_length: int | None = None) -> Request:
    headers = [(b"content-type", content_type.encode())]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {"type": "http", "method": "POST", "path": "/classify", "query_string": b"", "headers": headers}
    return Request(scope, body.receive)


def read(
    body: Body,
    max_file_bytes: int = 100_000,
    content_type: str = MULTIPART,
    content_length: int | None = None,
    max_files: int = 1,
) -> Upload:
    return asyncio.run(
        read_upload(request(body, content_type, content_length), max_file_bytes=max_file_bytes, max_files=max_files)
    )


def test_fields_and_file_are_parsed() -> None:
    data = multipart({"model_version": "efficientnet-lite0@1", "priority": "urgent", "top_k": "3"}, PNG_BYTES)
    upload = read(Body(data), content_length=len(data))
    assert upload.fields == {"model_version": "efficientnet-lite0@1", "priority": "urgent", "top_k": "3"}
    assert upload.file == PNG_BYTES
    assert [f.filename for f in upload.files] == ["cat.png"]


def test_a_body_split_in_tiny_chunks_parses_the_same() -> None:
    data = multipart({"callback_url": "https://example.com/hook"}, PNG_BYTES)
    upload = read(Body(data, chunk=7))
    assert upload.fields == {"callback_url": "https://example.com/hook"}
    assert upload.file == PNG_BYTES


def test_a_file_of_exactly_the_limit_is_accepted() -> None:
    upload = read(Body(multipart({}, PNG_BYTES)), max_file_bytes=len(PNG_BYTES))
    assert upload.file == PNG_BYTES


def test_a_file_over_the_limit_is_refused_while_streaming() -> None:
    body = Body(multipart({"priority": "low"}, b"\0" * 200 * CHUNK))
    with pytest.raises(PayloadTooLarge) as caught:
        read(body, max_file_bytes=10 * CHUNK)
    assert caught.value.status == 413
    assert body.handed_out < len(body.chunks)
    assert body.handed_out <= 12


def test_a_body_over_the_limit_without_content_length_is_refused_while_streaming() -> None:
    body = Body(multipart({"top_k": "1" * (2 * FORM_OVERHEAD)}, b"\0" * CHUNK))
    with pytest.raises(PayloadTooLarge):
        read(body, max_file_bytes=CHUNK)
    assert body.handed_out < len(body.chunks)


def test_a_declared_content_length_over_the_limit_is_refused_before_reading() -> None:
    body = Body(multipart({}, PNG_BYTES))
    with pytest.raises(PayloadTooLarge):
        read(body, max_file_bytes=CHUNK, content_length=CHUNK + FORM_OVERHEAD + 1)
    assert body.handed_out == 0


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "image/png", "application/x-www-form-urlencoded", "multipart/form-data", "text/plain"],
)
def test_a_body_that_is_not_multipart_with_a_boundary_is_refused(content_type: str) -> None:
    body = Body(b'{"file": "not an upload"}')
    with pytest.raises(UnsupportedMediaType) as caught:
        read(body, content_type=content_type)
    assert caught.value.status == 415
    assert body.handed_out == 0


def test_a_form_without_a_file_has_no_file() -> None:
    upload = read(Body(multipart({"priority": "high"})))
    assert upload.file is None
    assert upload.files == []
    assert upload.fields == {"priority": "high"}


@pytest.mark.parametrize("content_type", ["", "Content-Type: text/plain; charset=utf-8\r\n"], ids=["untyped", "text"])
def test_a_file_field_sent_as_text_is_a_validation_error(content_type: str) -> None:
    text_file = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"\r\n{content_type}\r\nhello\r\n'.encode()
    with pytest.raises(ValidationFailed) as caught:
        read(Body(text_file + multipart({"priority": "high"})))
    assert caught.value.code == "validation_error"
    assert "not a file" in caught.value.detail


def test_an_image_sent_as_a_text_value_is_still_the_image() -> None:
    image = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"\r\n\r\n'.encode() + PNG_BYTES + b"\r\n"
    upload = read(Body(image + multipart({"priority": "high"})))
    assert upload.file == PNG_BYTES
    assert upload.fields == {"priority": "high"}


def test_a_typed_file_part_without_a_filename_is_still_a_file() -> None:
    data = multipart({}, PNG_BYTES).replace(b'; filename="cat.png"', b"")
    upload = read(Body(data))
    assert upload.file == PNG_BYTES
    assert [f.filename for f in upload.files] == [None]


def test_an_empty_file_part_is_an_empty_file() -> None:
    upload = read(Body(multipart({}, b"")))
    assert upload.file == b""


def test_several_file_parts_are_read_in_order() -> None:
    upload = read(Body(multipart({"top_k": "2"}, PNG_BYTES, more=2)), max_files=3)
    assert [(f.filename, f.data) for f in upload.files] == [
        ("cat.png", PNG_BYTES),
        ("1-cat.png", PNG_BYTES + b"\x01"),
        ("2-cat.png", PNG_BYTES + b"\x02"),
    ]
    assert upload.fields == {"top_k": "2"}


def test_more_file_parts_than_allowed_is_a_validation_error() -> None:
    with pytest.raises(ValidationFailed) as caught:
        read(Body(multipart({}, PNG_BYTES, more=2)), max_files=2)
    assert "at most 2" in caught.value.detail


def test_one_file_part_over_the_limit_refuses_the_whole_request_while_streaming() -> None:
    body = Body(multipart({}, PNG_BYTES, more=1) + b"x" * 10 * CHUNK)
    with pytest.raises(PayloadTooLarge):
        read(body, max_file_bytes=len(PNG_BYTES), max_files=2)
    assert body.handed_out < len(body.chunks)


def test_other_file_parts_are_not_taken_for_the_image() -> None:
    data = multipart({}, PNG_BYTES).replace(b'name="file"', b'name="attachment"')
    upload = read(Body(data))
    assert upload.file is None
    assert "attachment" not in upload.fields


@pytest.mark.parametrize(
    "data",
    [
        b"this is not multipart at all",
        f"--{BOUNDARY}\r\nContent Disposition broken\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
    ],
    ids=["no-boundary", "bad-part-header"],
)
def test_a_malformed_body_is_a_validation_error(data: bytes) -> None:
    with pytest.raises(ValidationFailed) as caught:
        read(Body(data))
    assert caught.value.code == "validation_error"


def test_a_body_cut_off_inside_the_file_is_a_validation_error() -> None:
    # The stream ends normally (no disconnect), but the closing boundary never came: the image is partial.
    data = multipart({"priority": "low"}, PNG_BYTES)
    with pytest.raises(ValidationFailed):
        read(Body(data[: len(data) // 2]))
