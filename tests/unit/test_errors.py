"""The VisionqError tree: one class per stable code of API.md, each with the contract's HTTP status."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from visionq import errors
from visionq.errors import VisionqError

#: API.md, "Conventions": the stable `code` values, with the status each one answers with.
CONTRACT_STATUSES: dict[str, int] = {
    "invalid_image": 400,
    "unsupported_media_type": 415,
    "payload_too_large": 413,
    "image_too_large": 413,
    "validation_error": 422,
    "model_not_found": 422,
    "not_found": 404,
    "unauthorized": 401,
    "forbidden": 403,
    "rate_limited": 429,
    "queue_full": 503,
    "broker_unavailable": 503,
    "conflict": 409,
    "internal_error": 500,
}


def _every_subclass(cls: type[VisionqError]) -> list[type[VisionqError]]:
    found: list[type[VisionqError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_every_subclass(sub)]
    return found


def test_the_codes_of_the_tree_are_exactly_the_contract_codes() -> None:
    assert {cls.code for cls in _every_subclass(VisionqError)} == set(CONTRACT_STATUSES)


def test_each_code_belongs_to_one_class() -> None:
    codes = [cls.code for cls in _every_subclass(VisionqError)]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize("cls", _every_subclass(VisionqError), ids=lambda cls: cls.__name__)
def test_each_class_answers_with_the_contract_status(cls: type[VisionqError]) -> None:
    assert int(cls.status) == CONTRACT_STATUSES[cls.code]


@pytest.mark.parametrize("cls", _every_subclass(VisionqError), ids=lambda cls: cls.__name__)
def test_each_class_has_a_human_title(cls: type[VisionqError]) -> None:
    assert cls.title
    assert cls.title != cls.code


def test_all_error_classes_lists_the_whole_tree() -> None:
    assert set(errors.all_error_classes()) == set(_every_subclass(VisionqError))


def test_the_instance_keeps_detail_retry_after_and_errors() -> None:
    exc = errors.RateLimited("slow down: at most 10 requests a second", retry_after=7, errors=[{"loc": ["x"]}])
    assert exc.detail == "slow down: at most 10 requests a second"
    assert str(exc) == exc.detail
    assert exc.retry_after == 7
    assert exc.errors == [{"loc": ["x"]}]


def test_retry_after_and_errors_default_to_none() -> None:
    exc = errors.InvalidImage("the file is empty")
    assert exc.retry_after is None
    assert exc.errors is None


def test_statuses_are_http_statuses() -> None:
    assert all(isinstance(cls.status, HTTPStatus) for cls in _every_subclass(VisionqError))
