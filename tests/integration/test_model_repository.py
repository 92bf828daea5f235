"""The model repository on a real stack: versions published with `visionq models push` to S3 (moto's server on
loopback) or to a folder are served by a running API and worker without a restart, old versions stay
addressable, and a version whose weights do not match their manifest's SHA-256 fails its jobs with
`model_unavailable` while the service goes on.

The stacks list the repository only when a request names a version they lack (their poll is an hour), so a
version served here was found that way, not by the poll.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from PIL import Image

from environment import process_environ
from factories import encode
from integration.conftest import StackFactory
from integration.s3server import s3_server
from integration.stack import submit, wait_terminal
from model_factories import LABELS, SIZE, TinyColourNet, manifest, model_folder
from visionq.inference.onnx_backend import export_module_onnx
from visionq.inference.sources import ModelSources
from visionq.settings import Settings

REGION = "us-east-1"
#: moto takes any credentials; giving some keeps boto3 off its default chain (and its network lookups).
KEY_ID, SECRET = "visionq-test", "visionq-test-secret"
#: Seconds between the stacks' own listings: longer than any test, so that only a request's miss lists.
NO_POLL = 3600.0
#: Seconds `visionq models push` may take (an interpreter, boto3, one small model).
PUSH_TIMEOUT = 60
RED = encode(Image.new("RGB", (40, 30), (220, 10, 10)), "PNG")


def release(root: Path, name: str, *, logits: bool = False, labels: str = LABELS) -> Path:
    """A folder to push: the tiny colour model as ONNX (probabilities, or logits: other weights, the same
    answers), its labels and a manifest."""
    folder = model_folder(root, name, manifest("tiny", 1, "onnx", "model.onnx"), labels=labels)
    export_module_onnx(TinyColourNet(probabilities=not logits), SIZE, folder / "model.onnx")
    return folder


def push(settings: dict[str, str], *args: str) -> tuple[str, str]:
    """`visionq models push ARGS` with the service's settings in its environment: the ref and digest it prints."""
    env = process_environ() | {f"VISIONQ_{name.upper()}": value for name, value in settings.items()}
    run = subprocess.run(
        [sys.executable, "-m", "visionq", "models", "push", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=PUSH_TIMEOUT,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    ref, digest = run.stdout.split()
    return ref, digest


def classify(api: httpx.Client, model: str) -> dict[str, Any]:
    """Submit the red image to `model` and wait for the job: its final status body."""
    accepted = submit(api, RED, model_version=model)
    assert accepted.status_code == 202, accepted.text
    return wait_terminal(api, accepted.json()["job_id"])


def result_of(api: httpx.Client, status: dict[str, Any]) -> dict[str, Any]:
    assert status["status"] == "completed", status
    body: dict[str, Any] = api.get(f"/result/{status['job_id']}").json()
    return body


# --- S3 ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("releases")
    release(root, "one")
    release(root, "two", logits=True, labels="blue\ngreen\nred\n")  # other weights, and red is called "blue"
    return root


@pytest.fixture(scope="module")
def s3_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A bucket on moto's server, and the settings that make `models/` in it the model repository."""
    with s3_server(tmp_path_factory.mktemp("s3") / "moto.log") as endpoint:
        bucket = f"visionq-models-{uuid.uuid4().hex[:12]}"
        client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
        )
        client.create_bucket(Bucket=bucket)
        yield {
            "model_repository": f"s3://{bucket}/models",
            "s3_endpoint_url": endpoint,
            "s3_region": REGION,
            "s3_access_key_id": KEY_ID,
            "s3_secret_access_key": SECRET,
        }


@pytest.fixture(scope="module")
def first_push(s3_settings: dict[str, str], releases: Path) -> tuple[str, str]:
    return push(s3_settings, "tiny", str(releases / "one"))


@pytest.fixture(scope="module")
def s3_stack(
    start_stack: StackFactory, s3_settings: dict[str, str], first_push: tuple[str, str]
) -> Iterator[tuple[Settings, httpx.Client]]:
    # No fallback model: a job whose model cannot load fails with model_unavailable.
    settings, _, server = start_stack(
        "model-repository", warm_models=["tiny@1"], worker_pool="solo", model_repository_poll=NO_POLL, **s3_settings
    )
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield settings, client


def test_versions_pushed_to_s3_are_served_by_the_running_stack(
    s3_stack: tuple[Settings, httpx.Client], s3_settings: dict[str, str], releases: Path, first_push: tuple[str, str]
) -> None:
    _, api = s3_stack
    assert first_push[0] == "tiny@1"
    one = result_of(api, classify(api, "tiny@1"))
    assert (one["model_version"], one["predictions"][0]["class_name"]) == ("tiny@1", "red")
    assert one["metadata"]["receipt"]["weights_sha256"] == first_push[1]

    ref, digest = push(s3_settings, "tiny", str(releases / "two"))  # while the stack runs
    assert ref == "tiny@2"
    assert digest != first_push[1]

    two = result_of(api, classify(api, "tiny@2"))
    assert (two["model_version"], two["predictions"][0]["class_name"]) == ("tiny@2", "blue")
    assert two["metadata"]["receipt"]["weights_sha256"] == digest

    listed = {f"{m['name']}@{m['version']}": m for m in api.get("/models").json()}
    assert "tiny" in listed["tiny@2"]["aliases"], "a name means its highest version"
    again = result_of(api, classify(api, "tiny@1"))
    assert (again["model_version"], again["predictions"][0]["class_name"]) == ("tiny@1", "red")


def test_weights_that_do_not_match_their_manifest_fail_the_job_and_the_service_goes_on(
    s3_stack: tuple[Settings, httpx.Client], s3_settings: dict[str, str], releases: Path
) -> None:
    settings, api = s3_stack
    weights = (releases / "one" / "model.onnx").read_bytes()
    tampered = weights + b"\x00"
    expected, actual = hashlib.sha256(weights).hexdigest(), hashlib.sha256(tampered).hexdigest()
    bucket, _, prefix = s3_settings["model_repository"].removeprefix("s3://").partition("/")
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=s3_settings["s3_endpoint_url"],
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )
    text = manifest("tampered", 1, "onnx", "model.onnx") + f'sha256 = "{expected}"\n'
    for name, body in (("model.onnx", tampered), ("labels.txt", LABELS.encode()), ("manifest.toml", text.encode())):
        client.put_object(Bucket=bucket, Key=f"{prefix}/tampered/1/{name}", Body=body)

    final = classify(api, "tampered@1")  # accepted: the API lists the repository, and reads no weights

    assert final["status"] == "failed", final
    assert final["error"]["code"] == "model_unavailable"
    message = final["error"]["message"]
    assert "tampered@1 failed to load" in message
    assert f"SHA-256 is {actual}, but the manifest says {expected}" in message
    mirror = ModelSources(settings).mirror
    assert mirror is not None
    assert sorted(p.name for p in (mirror.root / "tampered" / "1").iterdir()) == ["labels.txt", "manifest.toml"], (
        "the tampered file was not kept"
    )
    assert api.get("/health").status_code == 200
    after = result_of(api, classify(api, "tiny@1"))
    assert after["model_version"] == "tiny@1", "the worker serves the other versions"


# --- a folder ------------------------------------------------------------------------------------------------


def test_versions_pushed_to_a_folder_are_served_by_the_running_stack(
    start_stack: StackFactory, releases: Path, tmp_path: Path
) -> None:
    repository = {"model_repository": str(tmp_path / "repository")}
    assert push(repository, "tiny", str(releases / "one"))[0] == "tiny@1"
    _, _, server = start_stack(
        "model-folder-repository", warm_models=["tiny"], worker_pool="solo", model_repository_poll=NO_POLL, **repository
    )

    with httpx.Client(base_url=server.url, timeout=30) as api:
        assert result_of(api, classify(api, "tiny"))["model_version"] == "tiny@1"
        ref, digest = push(repository, "tiny", str(releases / "two"))
        two = result_of(api, classify(api, ref))

    assert (two["model_version"], two["predictions"][0]["class_name"]) == ("tiny@2", "blue")
    assert two["metadata"]["receipt"]["weights_sha256"] == digest
