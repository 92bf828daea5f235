"""`GET /models/{ref}` on the real stack: a model's card, through HTTP, the SDK and the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest

from factories import cat_variants
from integration.stack import ApiServer, WorkerProcess, submit, wait_for, wait_terminal
from visionq.api.problems import PROBLEM_MEDIA_TYPE
from visionq.client import Client, ModelCard, NotFoundError
from visionq.settings import Settings

Stack = tuple[Settings, WorkerProcess, ApiServer]

CAT_JPEG = cat_variants()["jpeg"]
LITE0 = "efficientnet-lite0@1"
SHA256 = re.compile(r"[0-9a-f]{64}")
#: Seconds for the worker's next heartbeat to carry what it reports of a model it has run.
REPORT_TIMEOUT = 30.0
#: Seconds one CLI command may take.
COMMAND_TIMEOUT = 120.0


def reported_card(api: httpx.Client, ref: str) -> dict[str, Any]:
    """The card of `ref` once a live worker's heartbeat reports the weights it runs."""

    def reported() -> dict[str, Any] | None:
        card: dict[str, Any] = api.get(f"/models/{ref}").json()
        return card if card["weights_sha256"] is not None else None

    card: dict[str, Any] = wait_for(reported, REPORT_TIMEOUT, f"a worker to report the weights of {ref}", interval=0.2)
    return card


def test_the_card_of_a_builtin_shows_its_transform_and_the_weights_the_workers_run(api: httpx.Client) -> None:
    wait_terminal(api, submit(api, CAT_JPEG, model_version=LITE0).json()["job_id"])

    response = api.get(f"/models/{LITE0}")
    card = reported_card(api, LITE0)

    assert response.status_code == 200
    listed = next(entry for entry in api.get("/models").json() if f"{entry['name']}@{entry['version']}" == LITE0)
    assert {name: card[name] for name in listed if name != "loaded"} == {
        name: value for name, value in listed.items() if name != "loaded"
    }, "the card holds the /models entry"
    transform = card["transform"]
    assert (transform["resize"], transform["interpolation"], transform["input_size"]) == ("squash", "bicubic", 224)
    assert transform["crop_fraction"] == 1.0
    assert transform["mean"] == pytest.approx([127 / 255] * 3)
    assert transform["std"] == pytest.approx([128 / 255] * 3)
    assert transform["channel_order"] == "RGB"
    assert SHA256.fullmatch(card["weights_sha256"])
    assert SHA256.fullmatch(card["preprocessing_sha256"])
    assert SHA256.fullmatch(card["labels_sha256"])
    assert ";resize=squash;" in card["preprocessing"]
    assert (card["precision"], card["runtime"], card["breaker"], card["num_classes"]) == (
        "fp32",
        "onnx",
        "closed",
        1000,
    )
    assert card["agreement"] >= 0.99
    assert card["agreement_sample"] > 0
    assert card["runtime_version"]
    assert card["cpu_feature"] is None, "an exact model uses no int8 kernels"


def test_latest_and_a_bare_name_give_the_card_of_the_version_they_mean(api: httpx.Client) -> None:
    exact = api.get(f"/models/{LITE0}").json()

    for ref in ("latest", "efficientnet-lite0"):
        card = api.get(f"/models/{ref}").json()
        assert (card["name"], card["version"]) == ("efficientnet-lite0", 1), ref
        assert card["preprocessing_sha256"] == exact["preprocessing_sha256"]


@pytest.mark.parametrize("ref", ["nope@1", "efficientnet-lite0@99", "efficientnet-lite0@x"])
def test_an_unknown_model_is_a_404_problem(api: httpx.Client, ref: str) -> None:
    response = api.get(f"/models/{ref}")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    problem = response.json()
    assert (problem["code"], problem["status"]) == ("not_found", 404)
    assert "efficientnet-lite0" in problem["detail"], "it says which models there are"


def test_the_sdk_reads_a_card_and_raises_not_found_for_an_unknown_model(stack: Stack) -> None:
    with Client(stack[2].url) as client:
        card = client.model("efficientnet-lite1")
        with pytest.raises(NotFoundError):
            client.model("nope@1")

    assert isinstance(card, ModelCard)
    assert (card.name, card.version, card.transform.resize, card.transform.input_size) == (
        "efficientnet-lite1",
        1,
        "squash",
        240,
    )


def test_the_cli_prints_a_card(stack: Stack) -> None:
    env = {**os.environ, "VISIONQ_URL": stack[2].url}

    def visionq(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "visionq", "models", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)

    as_json, table, unknown = visionq(LITE0, "--json"), visionq(LITE0), visionq("nope@1")

    assert as_json.returncode == 0, as_json.stderr
    [line] = as_json.stdout.splitlines()
    assert json.loads(line)["transform"]["resize"] == "squash"
    assert table.returncode == 0, table.stderr
    assert "squash, bicubic" in table.stdout
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error[not_found]: "), unknown.stderr
