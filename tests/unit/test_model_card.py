"""A model's card (`GET /models/{ref}`): its transform from the spec, and the figures the workers report."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from visionq.api.endpoints.catalog import model_card, transform_info
from visionq.imaging.transforms import ChannelOrder, Resize
from visionq.inference.catalog import BUILTIN_SPECS
from visionq.inference.imagenet import imagenet_labels
from visionq.inference.manifest import labels_sha256
from visionq.inference.spec import ModelSpec, Runtime
from visionq.wire.schemas import ModelInfo, TransformInfo

LITE0 = next(spec for spec in BUILTIN_SPECS if spec.ref == "efficientnet-lite0@1")
INT8 = next(spec for spec in BUILTIN_SPECS if spec.ref == "efficientnet-lite0-int8@1")
SHA = "ab" * 32


def _info(spec: ModelSpec, agreement: float | None = None) -> ModelInfo:
    return ModelInfo(
        name=spec.name,
        version=spec.version,
        aliases=[spec.name],
        input_size=spec.input_size,
        num_classes=spec.num_classes,
        runtime="onnx",
        precision=spec.precision.value,
        agreement=agreement,
        loaded=agreement is not None,
    )


def test_the_builtin_transform_squashes_the_whole_image() -> None:
    transform = transform_info(LITE0.transform)

    assert transform == TransformInfo(
        resize="squash",
        crop_fraction=1.0,
        interpolation="bicubic",
        mean=(127 / 255,) * 3,
        std=(128 / 255,) * 3,
        input_size=224,
        channel_order="RGB",
    )


def test_a_user_transform_shows_every_choice() -> None:
    spec = ModelSpec(
        name="mine",
        version=2,
        input_size=96,
        runtime=Runtime.ONNX,
        weights="/m/mine.onnx",
        resize=Resize.LETTERBOX,
        channel_order=ChannelOrder.BGR,
    )

    transform = transform_info(spec.transform).model_dump()

    assert (transform["resize"], transform["crop_fraction"], transform["channel_order"]) == ("letterbox", 1.0, "BGR")
    assert (transform["interpolation"], transform["input_size"]) == ("bilinear", 96)


def test_the_wire_shape_names_every_resize_and_channel_order() -> None:
    # The wire shape spells the values out (the client must not import imaging): it must keep up with the enums.
    assert set(get_args(TransformInfo.model_fields["resize"].annotation)) == {r.value for r in Resize}
    assert set(get_args(TransformInfo.model_fields["channel_order"].annotation)) == {c.value for c in ChannelOrder}


def test_a_card_without_a_worker_report_has_nulls_for_the_reported_figures() -> None:
    card = model_card(_info(LITE0), LITE0, export=None, labels=imagenet_labels())

    assert (card.weights_sha256, card.runtime_version, card.agreement, card.agreement_sample) == (None,) * 4
    assert card.cpu_feature is None
    assert card.breaker_reason is None
    assert card.preprocessing == LITE0.transform.canonical()
    assert card.preprocessing_sha256 == LITE0.transform.sha256()
    assert card.labels_sha256 == labels_sha256(imagenet_labels())
    assert card.model_dump(include=set(ModelInfo.model_fields)) == _info(LITE0).model_dump(), "the /models entry"


def test_a_card_shows_what_a_live_worker_reports() -> None:
    export: dict[str, Any] = {
        "runtime": "onnx",
        "agreement": 0.86,
        "sample": 512,
        "weights_sha256": SHA,
        "runtime_version": "1.20.1",
        "cpu_feature": "avx512_vnni",
    }

    card = model_card(_info(INT8, agreement=0.86), INT8, export=export, labels=imagenet_labels())

    assert (card.weights_sha256, card.runtime_version, card.cpu_feature) == (SHA, "1.20.1", "avx512_vnni")
    assert (card.precision, card.agreement, card.agreement_sample) == ("int8", 0.86, 512)


@pytest.mark.parametrize("missing", ["weights_sha256", "runtime_version", "cpu_feature"])
def test_a_figure_an_older_worker_does_not_report_is_null(missing: str) -> None:
    export = {"runtime": "onnx", "agreement": 1.0, "sample": 64, "weights_sha256": SHA, "runtime_version": "1.20.1"}
    export.pop(missing, None)

    card = model_card(_info(LITE0, agreement=1.0), LITE0, export=export, labels=imagenet_labels())

    assert card.model_dump()[missing] is None
    assert card.agreement_sample == 64


def test_the_breaker_reason_is_on_the_card_while_it_is_open() -> None:
    info = _info(LITE0).model_copy(update={"breaker": "open"})

    card = model_card(info, LITE0, export=None, labels=imagenet_labels(), breaker_reason="weights unreadable")

    assert (card.breaker, card.breaker_reason) == ("open", "weights unreadable")
