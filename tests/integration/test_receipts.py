"""Receipts from a real worker, and `visionq verify` re-running a real job from its receipt in its own process
(with this machine's settings and the session's model cache, as a user runs it)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import onnxruntime
import orjson
import pytest
import redis

from environment import model_cache, process_environ
from factories import cat_variants
from integration.stack import ApiServer, WorkerProcess, submit, wait_for, wait_terminal
from visionq.inference.catalog import build_catalog
from visionq.inference.export import ensure_onnx
from visionq.inference.imagenet import imagenet_labels
from visionq.inference.quantize import ensure_int8, int8_unsupported
from visionq.jobs import keys
from visionq.jobs.heartbeats import Heartbeat
from visionq.settings import Settings

Stack = tuple[Settings, WorkerProcess, ApiServer]

#: Seconds one `visionq verify` may take: it loads torch, onnxruntime and the model before it re-runs the job.
VERIFY_TIMEOUT = 120.0
#: Seconds a finished job may take to reach the archive on the test stack (archive_interval 0.2 s).
ARCHIVE_TIMEOUT = 15.0


def chelsea() -> bytes:
    return cat_variants()["png"]


def classified(api: httpx.Client, image: bytes, **fields: Any) -> dict[str, Any]:
    """The result body of `image`, classified by the stack."""
    accepted = submit(api, image, "chelsea.png", **fields)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    assert wait_terminal(api, job_id)["status"] == "completed"
    body: dict[str, Any] = api.get(f"/result/{job_id}").json()
    return body


def verify(stack: Stack, job_id: str, image: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    environment = process_environ() | {f"VISIONQ_{name.upper()}": value for name, value in settings.items()}
    return subprocess.run(
        [sys.executable, "-m", "visionq", "verify", job_id, str(image), "--url", stack[2].url],
        env=environment | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=VERIFY_TIMEOUT,
        check=False,
    )


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_result_carries_the_receipt_of_the_image_and_the_model_that_ran(stack: Stack, api: httpx.Client) -> None:
    result = classified(api, chelsea())
    spec = build_catalog(stack[0]).resolve("efficientnet-lite0@1")
    export, _ = ensure_onnx(spec, model_cache())  # made by the session's `visionq prepare`: this only finds it

    assert result["metadata"]["receipt"] == {
        "image_sha256": hashlib.sha256(chelsea()).hexdigest(),
        "weights_sha256": sha256_of(export),
        "runtime": "onnxruntime",
        "runtime_version": onnxruntime.__version__,
        "precision": "fp32",
        "preprocessing": spec.transform.canonical(),
        "preprocessing_sha256": hashlib.sha256(spec.transform.canonical().encode()).hexdigest(),
        "labels_sha256": hashlib.sha256("\n".join(imagenet_labels()).encode()).hexdigest(),
    }


def test_every_loaded_model_s_weights_digest_and_runtime_version_are_in_the_heartbeat(
    stack: Stack, stack_redis: redis.Redis
) -> None:
    beats = [
        Heartbeat.from_redis({str(k): str(v) for k, v in stack_redis.hgetall(name).items()})
        for name in stack_redis.scan_iter(f"{keys.WORKER_PREFIX}*")
    ]
    beat = next(beat for beat in beats if beat.queue == stack[0].queue)
    catalog = build_catalog(stack[0])

    assert set(beat.models) <= set(beat.exports), "every loaded model is listed, not only the exported ones"
    for ref in beat.models:
        spec = catalog.resolve(ref)
        made = ensure_int8 if spec.precision.value == "int8" else ensure_onnx
        assert beat.exports[ref]["weights_sha256"] == sha256_of(made(spec, model_cache())[0]), ref
        assert beat.exports[ref]["runtime_version"] == onnxruntime.__version__
        assert beat.exports[ref]["runtime"] == "onnx"


def test_the_receipt_survives_the_archive(api: httpx.Client, stack_redis: redis.Redis) -> None:
    result = classified(api, chelsea())
    job_id = result["job_id"]

    def archived() -> bool:
        page = api.get("/jobs", params={"status": "completed", "limit": 100}).json()
        return any(job["job_id"] == job_id for job in page["jobs"])

    wait_for(archived, ARCHIVE_TIMEOUT, "the archived job")
    stack_redis.delete(keys.status(job_id), keys.result(job_id))  # what the result TTL does

    from_archive = api.get(f"/result/{job_id}").json()
    assert from_archive["metadata"]["receipt"] == result["metadata"]["receipt"]
    assert from_archive == result


def test_verify_re_runs_the_job_here_and_finds_the_same_answer(stack: Stack, api: httpx.Client, tmp_path: Path) -> None:
    image = tmp_path / "chelsea.png"
    image.write_bytes(chelsea())
    job_id = classified(api, chelsea())["job_id"]

    run = verify(stack, job_id, image)

    assert run.returncode == 0, run.stdout + run.stderr
    assert f"verified: the re-run here gives job {job_id}'s answer" in run.stdout
    assert "the same top-5 classes in the same order, probabilities within 0.0001" in run.stdout
    assert "differs" not in run.stdout
    assert "285 Egyptian cat" in run.stdout


def test_verify_refuses_an_image_that_is_not_the_job_s(stack: Stack, api: httpx.Client, tmp_path: Path) -> None:
    job_id = classified(api, chelsea())["job_id"]
    other = tmp_path / "cat.jpg"
    other.write_bytes(cat_variants()["jpeg"])  # the same cat, other bytes

    run = verify(stack, job_id, other)

    assert run.returncode == 1
    message = " ".join(run.stderr.split())
    assert "the image you gave is not the one the job classified" in message
    assert hashlib.sha256(other.read_bytes()).hexdigest() in message
    assert hashlib.sha256(chelsea()).hexdigest() in message
    assert run.stdout == "", "nothing was re-run"


def test_verify_reports_other_weights_and_still_checks_the_answer(
    stack: Stack, api: httpx.Client, tmp_path: Path
) -> None:
    image = tmp_path / "chelsea.png"
    image.write_bytes(chelsea())
    job_id = classified(api, chelsea())["job_id"]

    run = verify(stack, job_id, image, builtin_runtime="torch")  # here: the state dict on PyTorch

    assert run.returncode == 0, run.stdout + run.stderr  # PyTorch and the export agree far within 1e-4
    assert "differs: the weights file differs" in run.stdout
    assert "differs: the runtime differs: runtime is onnxruntime in the job, torch here" in run.stdout


@pytest.mark.skipif(int8_unsupported() is not None, reason=f"no int8 builds on this CPU: {int8_unsupported()}")
def test_verify_checks_an_int8_job_by_its_top_class(stack: Stack, api: httpx.Client, tmp_path: Path) -> None:
    image = tmp_path / "chelsea.png"
    image.write_bytes(chelsea())
    result = classified(api, chelsea(), model_version="efficientnet-lite0-int8")
    assert result["metadata"]["receipt"]["precision"] == "int8"

    run = verify(stack, result["job_id"], image)

    assert run.returncode == 0, run.stdout + run.stderr
    assert "the same top-1 class, probabilities within 0.02" in run.stdout


def test_verify_needs_a_receipt(stack: Stack, api: httpx.Client, stack_redis: redis.Redis, tmp_path: Path) -> None:
    image = tmp_path / "chelsea.png"
    image.write_bytes(chelsea())
    result = classified(api, chelsea())
    del result["metadata"]["receipt"]  # as a result archived before receipts existed reads
    stack_redis.set(keys.result(result["job_id"]), orjson.dumps(result), keepttl=True)

    run = verify(stack, result["job_id"], image)

    assert run.returncode == 1
    assert "carries no receipt" in run.stderr


def test_verify_names_a_probability_the_re_run_does_not_give(
    stack: Stack, api: httpx.Client, stack_redis: redis.Redis, tmp_path: Path
) -> None:
    image = tmp_path / "chelsea.png"
    image.write_bytes(chelsea())
    result = classified(api, chelsea())
    top = result["predictions"][0]
    top["confidence"] -= 0.001  # as a result reads that another model, or another preprocessing, made
    stack_redis.set(keys.result(result["job_id"]), orjson.dumps(result), keepttl=True)

    run = verify(stack, result["job_id"], image)

    assert run.returncode == 1
    message = " ".join(run.stderr.split())
    assert f"not verified: the re-run here does not give job {result['job_id']}'s answer" in message
    assert f"class {top['class_id']} ({top['class_name']}): probability {top['confidence']:.6f} in the job" in message
    assert "more than 0.0001 apart" in message
    assert "│" in run.stdout, "both answers are shown"
