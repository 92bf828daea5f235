"""A streaming reader for `multipart/form-data` uploads that stops at the size limit.

FastAPI's `UploadFile` buffers the whole body before a route runs; this reads it chunk by chunk
and refuses an oversized file as soon as the limit is crossed (or at once, from Content-Length),
so a 2 GB upload costs the server 10 MiB, not 2 GB.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import Request

from visionq.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed, VisionqError
from visionq.imaging.decode import sniff_format

#: Bytes allowed on top of the file for the other fields, part headers and boundaries.
FORM_OVERHEAD = 64 * 1024
#: Non-file fields accepted in one form.
MAX_FIELDS = 32
FILE_FIELD = "file"
#: What a part without a filename declares itself, or is by default (RFC 7578 §4.4), when it is a text value.
TEXT_TYPES = (b"", b"text/plain")
_CALLBACKS = ("on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_part_data", "on_part_end")


@dataclass
class UploadedFile:
    data: bytes
    filename: str | None


@dataclass
class Upload:
    fields: dict[str, str]
    files: list[UploadedFile]

    @property
    def file(self) -> bytes | None:
        """The first image, for the forms that take one."""
        return self.files[0].data if self.files else None


@dataclass
class _Collector:
    max_file_bytes: int
    max_files: int
    fields: dict[str, str] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)
    _name: str = ""
    _is_file: bool = False
    _filename: str | None = None
    _type: bytes = b""
    _data: bytearray = field(default_factory=bytearray)
    _value: bytearray = field(default_factory=bytearray)
    _header_field: bytearray = field(default_factory=bytearray)
    _header_value: bytearray = field(default_factory=bytearray)

    def on_part_begin(self) -> None:
        self._name, self._is_file, self._filename, self._type = "", False, None, b""
        self._value, self._data = bytearray(), bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self._header_field).lower() == b"content-disposition":
            _, options = parse_options_header(bytes(self._header_value))
            self._name = options.get(b"name", b"").decode("utf-8", "replace")
            if b"filename" in options:
                self._is_file = True
                self._filename = options[b"filename"].decode("utf-8", "replace")
        elif bytes(self._header_field).lower() == b"content-type":
            self._type = parse_options_header(bytes(self._header_value))[0]
        self._header_field, self._header_value = bytearray(), bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._name == FILE_FIELD:
            self._data += data[start:end]
            if len(self._data) > self.max_file_bytes:
                raise PayloadTooLarge(_too_large(self.max_file_bytes))
        elif not self._is_file:
            self._value += data[start:end]

    def on_part_end(self) -> None:
        if self._name == FILE_FIELD:
            # No filename, a text type or none, and no image's bytes: a text field (`curl -F file=value`). An
            # image's bytes sent that way (`curl -F "file=<cat.jpg"`) are still taken as the image.
            if not self._is_file and self._type in TEXT_TYPES and not _is_image(self._data):
                raise ValidationFailed(
                    f"the `{FILE_FIELD}` field is a text value, not a file: send the image as a file part, with "
                    f"a filename (`curl -F {FILE_FIELD}=@cat.jpg`)"
                )
            if len(self.files) >= self.max_files:
                raise ValidationFailed(f"too many images: at most {self.max_files} `{FILE_FIELD}` parts per request")
            self.files.append(UploadedFile(bytes(self._data), self._filename))
        elif self._name and not self._is_file:
            if len(self.fields) >= MAX_FIELDS:
                raise ValidationFailed(f"too many form fields: at most {MAX_FIELDS} are accepted")
            self.fields[self._name] = self._value.decode("utf-8", "replace")


async def read_upload(
    request: Request, *, max_file_bytes: int, max_files: int = 1, max_total_bytes: int | None = None
) -> Upload:
    """Read the form of `POST /classify`, with up to `max_files` images in `file` parts, raising PayloadTooLarge
    the moment one of them, or the whole body (`max_total_bytes`, else `max_files` full files), is too big."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise UnsupportedMediaType("send the image as multipart/form-data with the image in a `file` field")
    limit = max_files * (max_file_bytes + FORM_OVERHEAD)
    if max_total_bytes is not None:
        limit = min(limit, max_total_bytes + FORM_OVERHEAD)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(_too_large(max_file_bytes))

    collector = _Collector(max_file_bytes, max_files)
    callbacks = {name: getattr(collector, name) for name in _CALLBACKS}
    parser = MultipartParser(options[b"boundary"], callbacks=callbacks)  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(_too_large(max_file_bytes))
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise ValidationFailed(f"the multipart body is malformed: {exc}") from exc
    # finalize() does not check that the closing boundary arrived: a body cut short would pass.
    if parser.state != MultipartState.END:
        raise ValidationFailed("the multipart body ended before its closing boundary; send the whole form")
    return Upload(fields=collector.fields, files=collector.files)


def _too_large(limit: int) -> str:
    return f"the image is larger than the limit of {limit:,} bytes; send a smaller or more compressed file"


def _is_image(data: bytes | bytearray) -> bool:
    """Whether `data` starts as a supported image does (its magic bytes alone)."""
    try:
        sniff_format(bytes(data[:16]))
    except VisionqError:
        return False
    return True
