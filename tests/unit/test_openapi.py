"""The OpenAPI document of `create_app`: every route, every problem response, the upload form."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import SettingsFactory
from visionq.api.app import create_app
from visionq.api.problems import PROBLEM_MEDIA_TYPE

PROBLEM_SCHEMA = {"$ref": "#/components/schemas/Problem"}
ROUTES = [
    ("post", "/classify"),
    ("get", "/status/{job_id}"),
    ("get", "/result/{job_id}"),
    ("get", "/models"),
    ("get", "/models/{ref}"),
    ("get", "/health"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
]


@pytest.fixture
def openapi(make_settings: SettingsFactory) -> dict[str, Any]:
    document: dict[str, Any] = create_app(make_settings()).openapi()
    return document


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref` through the document, as a client generator would."""
    while "$ref" in schema:
        ref: str = schema["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = document
        for part in ref.removeprefix("#/").split("/"):
            assert part in target, f"{ref} does not resolve in the OpenAPI document"
            target = target[part]
        schema = target
    return schema


def _upload_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = openapi["paths"]["/classify"]["post"]["requestBody"]["content"]["multipart/form-data"][
        "schema"
    ]
    return schema


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_is_documented(openapi: dict[str, Any], method: str, path: str) -> None:
    operation = openapi["paths"][path][method]
    assert operation["summary"]
    assert operation["responses"]


@pytest.mark.parametrize("status", ["400", "413", "415", "422", "503"])
def test_classify_documents_its_problems_as_problem_json(openapi: dict[str, Any], status: str) -> None:
    response = openapi["paths"]["/classify"]["post"]["responses"][status]
    assert response["content"][PROBLEM_MEDIA_TYPE]["schema"] == PROBLEM_SCHEMA


@pytest.mark.parametrize("path", ["/status/{job_id}", "/result/{job_id}"])
def test_job_routes_document_not_found(openapi: dict[str, Any], path: str) -> None:
    response = openapi["paths"][path]["get"]["responses"]["404"]
    assert response["content"][PROBLEM_MEDIA_TYPE]["schema"] == PROBLEM_SCHEMA
    assert "`not_found`" in response["description"]


def test_the_model_card_documents_not_found_and_its_fields(openapi: dict[str, Any]) -> None:
    operation = openapi["paths"]["/models/{ref}"]["get"]
    response = operation["responses"]["404"]
    assert response["content"][PROBLEM_MEDIA_TYPE]["schema"] == PROBLEM_SCHEMA
    assert "`not_found`" in response["description"]
    card = _resolve(openapi, operation["responses"]["200"]["content"]["application/json"]["schema"])
    expected = {"transform", "weights_sha256", "precision", "agreement", "breaker", "name", "version", "aliases"}
    assert expected <= set(card["properties"])
    transform = _resolve(openapi, card["properties"]["transform"])
    assert set(_resolve(openapi, transform["properties"]["resize"])["enum"]) == {"center_crop", "squash", "letterbox"}


def test_problem_descriptions_name_the_codes(openapi: dict[str, Any]) -> None:
    responses = openapi["paths"]["/classify"]["post"]["responses"]
    assert "`invalid_image`" in responses["400"]["description"]
    assert "`payload_too_large`" in responses["413"]["description"]
    assert "`image_too_large`" in responses["413"]["description"]
    assert "`unsupported_media_type`" in responses["415"]["description"]
    assert "`model_not_found`" in responses["422"]["description"]
    assert "`validation_error`" in responses["422"]["description"]
    assert "`broker_unavailable`" in responses["503"]["description"]


def _problem_operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every operation but the health probes (which answer no problem: liveness reads nothing, readiness answers
    its own body), named `METHOD /path`."""
    return [
        (f"{method.upper()} {path}", operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if path not in ("/health", "/health/ready")
    ]


def test_every_route_documents_broker_unavailable(openapi: dict[str, Any]) -> None:
    # Each reads Redis (job state, or the rate limits and credentials of `get_principal`), so each may answer 503.
    operations = _problem_operations(openapi)
    named = {name for name, _ in operations}
    assert {"GET /status/{job_id}", "GET /models/{ref}", "GET /metrics", "POST /batches", "GET /jobs"} <= named
    for name, operation in operations:
        response = operation["responses"].get("503")
        assert response is not None, f"{name} does not document 503"
        assert response["content"][PROBLEM_MEDIA_TYPE]["schema"] == PROBLEM_SCHEMA, name
        assert "`broker_unavailable`" in response["description"], name
    assert "`queue_full`" in openapi["paths"]["/batches"]["post"]["responses"]["503"]["description"]


def test_every_429_and_503_problem_declares_retry_after(openapi: dict[str, Any]) -> None:
    checked = 0
    for name, operation in _problem_operations(openapi):
        for status in ("429", "503"):
            if status in operation["responses"]:
                header = operation["responses"][status].get("headers", {}).get("Retry-After")
                assert header is not None, f"{name} {status} does not declare Retry-After"
                assert header["schema"]["type"] == "integer"
                checked += 1
    assert checked > len(ROUTES)


def test_batches_document_cache_control(openapi: dict[str, Any]) -> None:
    parameters = openapi["paths"]["/batches"]["post"]["parameters"]
    assert [parameter["name"] for parameter in parameters if parameter["in"] == "header"] == ["Cache-Control"]


def test_the_problem_schema_has_the_rfc_9457_fields(openapi: dict[str, Any]) -> None:
    problem = openapi["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "code", "errors"} <= set(problem["properties"])
    assert {"type", "title", "status", "detail", "code"} <= set(problem["required"])


def test_classify_accepts_the_image_as_a_binary_file(openapi: dict[str, Any]) -> None:
    schema = _upload_schema(openapi)
    assert schema["required"] == ["file"]
    assert schema["properties"]["file"]["type"] == "string"
    assert schema["properties"]["file"]["format"] == "binary"


def test_classify_documents_its_optional_form_fields(openapi: dict[str, Any]) -> None:
    properties = _upload_schema(openapi)["properties"]
    assert {"file", "model_version", "priority", "callback_url", "top_k"} <= set(properties)
    assert properties["model_version"]["default"] == "latest"
    assert properties["top_k"]["default"] == 5
    assert (properties["top_k"]["minimum"], properties["top_k"]["maximum"]) == (1, 20)


def test_classify_priority_is_a_resolvable_enum(openapi: dict[str, Any]) -> None:
    priority = _upload_schema(openapi)["properties"]["priority"]
    assert set(_resolve(openapi, priority)["enum"]) == {"low", "normal", "high", "urgent"}


def test_every_reference_in_the_document_resolves(openapi: dict[str, Any]) -> None:
    def refs(node: Any) -> list[dict[str, Any]]:
        if isinstance(node, dict):
            found = [node] if "$ref" in node else []
            return found + [ref for value in node.values() for ref in refs(value)]
        if isinstance(node, list):
            return [ref for value in node for ref in refs(value)]
        return []

    for ref in refs(openapi):
        assert _resolve(openapi, ref)


def test_classify_answers_202_with_a_location(openapi: dict[str, Any]) -> None:
    accepted = openapi["paths"]["/classify"]["post"]["responses"]["202"]
    schema = _resolve(openapi, accepted["content"]["application/json"]["schema"])
    assert {"job_id", "status", "created_at", "model_version", "priority", "links"} <= set(schema["properties"])
