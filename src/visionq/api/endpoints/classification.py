"""POST /classify: read the upload, hand it to the submission service, answer at once (or, with
`Prefer: wait=N`, with the result if the job ends within N seconds)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from visionq import errors
from visionq.api.dependencies import get_principal, get_state
from visionq.api.problems import problem_body, problem_responses, protected_responses
from visionq.api.state import AppState
from visionq.api.submission import Accepted, Part
from visionq.api.uploads import FILE_FIELD, read_upload
from visionq.api.waiting import PREFER_WAIT_DOC, parse_prefer_wait, preference_applied, wait_for_end
from visionq.wire.jobs import FailureBody, ResultBody
from visionq.wire.schemas import ClassifyForm, JobAccepted
from visionq.wire.states import JobStatus

router = APIRouter(tags=["classification"], responses=protected_responses())


def request_body_schema(*, archive: bool = False) -> dict[str, Any]:
    what = "An image, or (repeated) several; or one zip or tar archive of images." if archive else "The image."
    properties: dict[str, Any] = {FILE_FIELD: {"type": "string", "format": "binary", "description": what}}
    form_schema = ClassifyForm.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, schema in form_schema["properties"].items():
        properties[name] = schema
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": [FILE_FIELD], "properties": properties}
                }
            },
        }
    }


IDEMPOTENCY_KEY, PREFER, CACHE_CONTROL = "Idempotency-Key", "Prefer", "Cache-Control"
#: The longest `Idempotency-Key`.
IDEMPOTENCY_KEY_MAX = 255
#: `classify`'s request headers, as its OpenAPI document lists them.
HEADERS: list[dict[str, Any]] = [
    {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {
            "anyOf": [{"type": "string", **limits}, {"type": "null"}],
            "title": name,
            "description": what,
            **more,
        },
        "description": what,
    }
    for name, limits, what, more in (
        (
            IDEMPOTENCY_KEY,
            {"minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX},
            "The same key from the same principal within 24 h returns the original job (200).",
            {},
        ),
        (
            CACHE_CONTROL,
            {},
            "`no-cache` (or `no-store`): run the model even if an identical job's result could be reused.",
            {},
        ),
        (PREFER, {}, PREFER_WAIT_DOC, {"examples": ["wait=30"]}),
    )
]
#: The `Cache-Control` parameter alone, for the other route that submits jobs (`POST /batches`).
CACHE_CONTROL_PARAMETER = next(header for header in HEADERS if header["name"] == CACHE_CONTROL)


@router.post(
    "/classify",
    status_code=202,
    response_model=JobAccepted,
    responses={
        202: {
            "description": "The job, accepted (`status` is `pending`, even when the result cache has already "
            'completed it). With several `file` parts: `{"jobs": [...]}`, each part\'s accepted body or problem '
            "details, in part order, whatever each part's outcome.",
        },
        200: {
            "model": JobAccepted | ResultBody | FailureBody,
            "description": "The original job of this `Idempotency-Key` (a replay), or, with `Prefer: wait=N`, "
            "the result (or failure) of a job that ended within N seconds.",
        },
        **problem_responses(
            errors.InvalidImage,
            errors.UnsupportedMediaType,
            errors.PayloadTooLarge,
            errors.ImageTooLarge,
            errors.ModelNotFound,
            errors.Conflict,
            errors.QueueFull,
            errors.BrokerUnavailable,
        ),
    },
    openapi_extra={**request_body_schema(), "parameters": HEADERS},
)
async def classify(request: Request) -> Response:
    """Submit an image (or several `file` parts) for classification; answers 202 with the job id at once."""
    # The busiest route takes its dependencies and headers by hand: FastAPI's resolution of the same ones cost
    # 0.16 ms of CPU per upload (half of what hashing a 500 KB photo costs); HEADERS documents them, and a bad one
    # gets the validation problem that FastAPI's would have.
    state = await get_state(request)
    principal = await get_principal(request, state)
    idempotency_key = _idempotency_key(request.headers.get(IDEMPOTENCY_KEY))
    wait = parse_prefer_wait(request.headers.get(PREFER))
    settings = state.settings
    upload = await read_upload(
        request, max_file_bytes=settings.max_upload_bytes, max_files=settings.max_images_per_request
    )
    form = parse_form(upload.fields)
    if not upload.files:
        raise errors.ValidationFailed(f"the `{FILE_FIELD}` field with the image is missing")
    request_id = request.state.request_id
    cached = not is_no_cache(request.headers.get(CACHE_CONTROL))
    if len(upload.files) > 1:
        if idempotency_key is not None:
            raise errors.ValidationFailed("an Idempotency-Key covers one image: send one `file` part with it")
        answers = await state.submitter.submit_many(
            owner=principal.id,
            form=form,
            parts=[Part(file.data, file.filename) for file in upload.files],
            request_id=request_id,
            cached=cached,
        )
        return _many(answers)
    accepted = await state.submitter.submit(
        owner=principal.id,
        form=form,
        image=upload.files[0].data,
        request_id=request_id,
        idempotency_key=idempotency_key,
        cached=cached,
    )
    job_id = accepted.body.job_id
    request.state.job_id = job_id  # for the access log
    headers = {"Location": accepted.body.links.status}
    if accepted.replayed:
        return JSONResponse(accepted.body.model_dump(mode="json"), headers={**headers, "Idempotent-Replayed": "true"})
    if wait is not None:  # one image only: several images are followed one by one, by their own links
        headers.update(preference_applied(wait))
        ended = await _ended(state, job_id, wait)
        if ended is not None:
            return Response(ended, media_type="application/json", headers=headers)
    return JSONResponse(accepted.body.model_dump(mode="json"), status_code=202, headers=headers)


async def _ended(state: AppState, job_id: str, seconds: int) -> bytes | None:
    """The job's result body (or its failure body) if it ends within `seconds`, else None."""
    record, result = await wait_for_end(state.events, state.store, job_id, seconds)
    if record is None or not record.status.terminal:
        return None
    if record.status is JobStatus.COMPLETED:
        return result if result is not None else await state.store.get_result(job_id)
    return orjson.dumps(record.failure_body().model_dump(mode="json"))


def _many(answers: list[Accepted | errors.VisionqError]) -> Response:
    """`202 {"jobs": [...]}` in part order, whatever each part's outcome (API.md): a part's refusal is its item,
    even when no part made a job; what refuses the whole request was raised before any part was tried."""
    jobs: list[dict[str, Any]] = [
        answer.body.model_dump(mode="json") if isinstance(answer, Accepted) else problem_body(answer)
        for answer in answers
    ]
    return JSONResponse({"jobs": jobs}, status_code=202)


def _idempotency_key(header: str | None) -> str | None:
    """The `Idempotency-Key` header, checked as FastAPI checks a declared header (the same 422)."""
    if header is None:
        return None
    if 1 <= len(header) <= IDEMPOTENCY_KEY_MAX:
        return header
    short = not header
    limit = 1 if short else IDEMPOTENCY_KEY_MAX
    problem = {
        "type": "string_too_short" if short else "string_too_long",
        "loc": ("header", IDEMPOTENCY_KEY),
        "msg": f"String should have at {'least' if short else 'most'} {limit} character{'s' if limit > 1 else ''}",
        "input": header,
    }
    raise RequestValidationError([problem])


def is_no_cache(header: str | None) -> bool:
    """Whether `Cache-Control` asks for a fresh answer (RFC 9111 request directives `no-cache`, `no-store`)."""
    directives = {part.strip().split("=", 1)[0].lower() for part in (header or "").split(",")}
    return bool(directives & {"no-cache", "no-store"})


def parse_form(fields: dict[str, str]) -> ClassifyForm:
    try:
        return ClassifyForm.model_validate({k: v for k, v in fields.items() if v != ""})
    except ValidationError as exc:
        problems = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        summary = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems)
        raise errors.ValidationFailed(f"the form is not valid: {summary}", errors=problems) from exc
