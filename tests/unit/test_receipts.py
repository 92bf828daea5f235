"""Receipts: what a result says ran, and how a re-run's receipt and ranking are compared with it (pure)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from visionq.inference.catalog import BUILTIN_SPECS
from visionq.inference.imagenet import imagenet_labels
from visionq.inference.manifest import labels_sha256, read_labels_file
from visionq.inference.receipts import (
    FP32,
    INT8,
    ModelIdentity,
    build_receipt,
    file_sha256,
    prediction_differences,
    receipt_differences,
    tolerance_for,
)
from visionq.inference.spec import Precision, Runtime
from visionq.wire.jobs import Prediction, Receipt, ResultMetadata

LITE0, LITE0_INT8 = (
    next(s for s in BUILTIN_SPECS if s.name == name) for name in ("efficientnet-lite0", "efficientnet-lite0-int8")
)
IMAGE = b"\x89PNG not really, but bytes all the same"
EXPORT = ModelIdentity(Runtime.ONNX, "1.32.0", Path("/cache/efficientnet-lite0-0123.onnx"), "e" * 64)


def ranking(*pairs: tuple[int, float]) -> list[Prediction]:
    return [Prediction(class_id=class_id, class_name=f"class {class_id}", confidence=p) for class_id, p in pairs]


JOB = ranking((285, 0.8), (282, 0.1), (281, 0.05))


def test_the_receipt_has_exactly_the_fields_api_md_names() -> None:
    assert list(Receipt.model_fields) == [
        "image_sha256",
        "weights_sha256",
        "runtime",
        "runtime_version",
        "precision",
        "preprocessing",
        "preprocessing_sha256",
        "labels_sha256",
    ]
    assert ResultMetadata.model_fields["receipt"].default is None, "results archived before receipts still parse"


def test_a_receipt_names_the_image_the_weights_that_ran_the_transform_and_the_labels() -> None:
    receipt = build_receipt(IMAGE, LITE0, EXPORT, imagenet_labels())

    assert receipt == Receipt(
        image_sha256=hashlib.sha256(IMAGE).hexdigest(),
        weights_sha256="e" * 64,
        runtime="onnxruntime",
        runtime_version="1.32.0",
        precision="fp32",
        preprocessing=LITE0.transform.canonical(),
        preprocessing_sha256=hashlib.sha256(LITE0.transform.canonical().encode()).hexdigest(),
        labels_sha256=hashlib.sha256("\n".join(imagenet_labels()).encode()).hexdigest(),
    )
    assert receipt.preprocessing.startswith("decode=exif_upright,rgb,alpha_on_white;resize=squash;")


@pytest.mark.parametrize(
    ("engine", "runtime"), [(Runtime.ONNX, "onnxruntime"), (Runtime.TORCH, "torch"), (Runtime.TORCHSCRIPT, "torch")]
)
def test_the_runtime_is_onnxruntime_or_torch(engine: Runtime, runtime: str) -> None:
    identity = ModelIdentity(engine, "1", Path("/w"), "0" * 64)
    assert build_receipt(IMAGE, LITE0, identity, ("a",)).runtime == runtime


def test_the_digest_the_api_took_of_the_upload_is_used_as_it_is() -> None:
    taken = hashlib.sha256(IMAGE).hexdigest()
    receipt = build_receipt(IMAGE, LITE0, EXPORT, imagenet_labels(), image_sha256=taken)
    assert receipt == build_receipt(IMAGE, LITE0, EXPORT, imagenet_labels())
    assert build_receipt(IMAGE, LITE0, EXPORT, ("a",), image_sha256="d" * 64).image_sha256 == "d" * 64, (
        "not hashed again"
    )


def test_an_int8_build_says_so() -> None:
    assert LITE0_INT8.precision is Precision.INT8
    assert build_receipt(IMAGE, LITE0_INT8, EXPORT, imagenet_labels()).precision == "int8"


def test_the_labels_digest_is_of_the_names_joined_by_newlines(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\n\n  dog  \nbird\n", encoding="utf-8")
    assert labels_sha256(read_labels_file(labels)) == hashlib.sha256(b"cat\ndog\nbird").hexdigest()
    assert labels_sha256(("cat", "dog")) != labels_sha256(("dog", "cat")), "the order is part of the labels"


def test_a_file_is_hashed_whole_however_large(tmp_path: Path) -> None:
    weights = tmp_path / "model.onnx"
    content = bytes(range(256)) * 5000  # larger than one read
    weights.write_bytes(content)
    assert file_sha256(weights) == hashlib.sha256(content).hexdigest()


def test_receipts_of_the_same_run_do_not_differ() -> None:
    receipt = build_receipt(IMAGE, LITE0, EXPORT, imagenet_labels())
    assert receipt_differences(receipt, receipt.model_copy()) == []


def test_the_differences_name_each_field_with_both_values_and_leave_the_image_out() -> None:
    job = build_receipt(IMAGE, LITE0, EXPORT, imagenet_labels())
    here = build_receipt(b"another image", LITE0, EXPORT, ("just", "three", "names"))
    here = here.model_copy(update={"weights_sha256": "f" * 64, "runtime_version": "1.33.0"})

    differences = receipt_differences(job, here)

    assert [(d.field, d.job, d.here) for d in differences] == [
        ("weights_sha256", "e" * 64, "f" * 64),
        ("runtime_version", "1.32.0", "1.33.0"),
        ("labels_sha256", job.labels_sha256, here.labels_sha256),
    ]


def test_precision_picks_the_tolerance() -> None:
    assert tolerance_for("fp32") == FP32
    assert tolerance_for("int8") == INT8
    assert FP32.probability < INT8.probability
    assert FP32.describe(5) == "the same top-5 classes in the same order, probabilities within 0.0001"
    assert INT8.describe(5) == "the same top-1 class, probabilities within 0.02"


def test_an_exact_re_run_within_the_tolerance_matches() -> None:
    here = ranking((285, 0.80004), (282, 0.09996), (281, 0.05), (287, 0.01))
    assert prediction_differences(JOB, here, FP32) == []


def test_an_exact_model_must_keep_the_whole_order() -> None:
    here = ranking((285, 0.8), (281, 0.1), (282, 0.1))
    assert prediction_differences(JOB, here, FP32) == [
        "the top-3 classes differ: the job's [285, 282, 281], the re-run's [285, 281, 282]",
        "class 281 (class 281): probability 0.050000 in the job, 0.100000 in the re-run, more than 0.0001 apart",
    ]


def test_an_exact_model_must_keep_the_probabilities() -> None:
    here = ranking((285, 0.8003), (282, 0.1), (281, 0.05))
    assert prediction_differences(JOB, here, FP32) == [
        "class 285 (class 285): probability 0.800000 in the job, 0.800300 in the re-run, more than 0.0001 apart"
    ]


def test_an_int8_re_run_may_swap_close_classes_below_the_top() -> None:
    here = ranking((285, 0.79), (281, 0.06), (282, 0.09), (287, 0.01))
    assert prediction_differences(JOB, here, INT8) == []


def test_an_int8_re_run_must_keep_the_top_class_and_the_wider_tolerance() -> None:
    here = ranking((282, 0.5), (285, 0.45), (281, 0.05))
    assert prediction_differences(JOB, here, INT8) == [
        "the top-1 class differs: the job's [285], the re-run's [282]",
        "class 285 (class 285): probability 0.800000 in the job, 0.450000 in the re-run, more than 0.02 apart",
        "class 282 (class 282): probability 0.100000 in the job, 0.500000 in the re-run, more than 0.02 apart",
    ]


def test_a_class_the_re_run_does_not_have_is_a_difference() -> None:
    here = ranking((285, 0.8), (282, 0.1))  # a model with fewer classes
    assert prediction_differences(JOB, here, FP32) == [
        "the top-3 classes differ: the job's [285, 282, 281], the re-run's [285, 282]",
        "class 281 (class 281) is not among the re-run's classes",
    ]
