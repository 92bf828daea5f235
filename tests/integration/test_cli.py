"""The CLI's client commands run as a user runs them: `python -m visionq ...` processes against the real stack.

`visionq classify` gets a real pseudo-terminal where its live bars matter, and a pipe where `--json` matters.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from environment import model_cache
from factories import bad_inputs, cat_variants
from integration.stack import ApiServer, WorkerProcess
from ports import free_port
from terminal import run_in_terminal
from tests_support import CAT_CLASSES
from visionq.inference.quantize import int8_unsupported
from visionq.settings import Settings

Stack = tuple[Settings, WorkerProcess, ApiServer]

#: Seconds one CLI command may take before the test fails.
COMMAND_TIMEOUT = 120.0
#: Seconds a cold `visionq prepare` of Lite0 may take on a busy 2-core machine (its export and check: ~10 s alone).
PREPARE_TIMEOUT = 240.0
#: The folder of 5 images: the cat in three formats, in grey, and stored on its side with an EXIF rotation.
FOLDER = {
    "cat.jpg": "jpeg",
    "cat.png": "png",
    "cat.webp": "webp",
    "grey.jpg": "jpeg_grey",
    "rotated.jpg": "jpeg_exif_rotated",
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    variants = cat_variants()
    images = tmp_path / "photos"
    images.mkdir()
    for name, variant in FOLDER.items():
        (images / name).write_bytes(variants[variant])
    (images / "notes.txt").write_text("not an image, and not taken from a directory\n")
    return images


@pytest.fixture
def env(stack: Stack) -> dict[str, str]:
    return {**os.environ, "VISIONQ_URL": stack[2].url}


def visionq(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visionq", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def json_lines(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line parsed on its own; fails the test on any line that is not a JSON object."""
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert all(isinstance(line, dict) for line in lines), stdout
    return lines


def test_a_folder_of_five_images_shows_a_bar_each_then_the_results_table(folder: Path, env: dict[str, str]) -> None:
    status, screen = run_in_terminal(
        [sys.executable, "-m", "visionq", "classify", folder.name], env=env, cwd=folder.parent, timeout=COMMAND_TIMEOUT
    )

    assert status == 0, screen
    for name in FOLDER:
        # Each frame of the live display redraws every bar; the last frame shows where each job ended.
        frames = re.findall(rf"{re.escape(name)}\s+[━╺╸]+\s+(\d+)% (\w+)", screen)
        assert frames, f"no progress bar for {name}:\n{screen}"
        assert frames[-1] == ("100", "completed"), frames
        rows = [line for line in screen.splitlines() if line.startswith(f"{folder.name}/{name} ")]
        assert len(rows) == 1, f"one results row for {name}:\n{screen}"
        cells = [cell.strip() for cell in rows[0].split("│")]
        assert cells[1] in {"Egyptian cat", "tabby", "tiger cat"}, rows[0]
        assert 0.0 < float(cells[2]) <= 1.0
        assert cells[3] == "efficientnet-lite0@1"
        assert cells[4].endswith("ms")
    assert "notes.txt" not in screen, "a directory gives its image files only"


def test_json_prints_one_parsable_line_per_image_and_nothing_else(folder: Path, env: dict[str, str]) -> None:
    text = folder / "notes.txt"
    run = visionq("classify", str(folder), str(text), "--json", "--top-k", "3", env=env)

    assert run.returncode == 1, "a refused image makes the run fail"
    assert run.stderr == ""
    lines = json_lines(run.stdout)
    assert [Path(line["file"]).name for line in lines] == [*sorted(FOLDER), "notes.txt"]
    for line in lines[:-1]:
        assert line["status"] == "completed"
        assert len(line["predictions"]) == 3
        assert line["predictions"][0]["class_id"] in CAT_CLASSES
        assert line["model_version"] == "efficientnet-lite0@1"
        assert line["job_id"]
    assert lines[-1] == {
        "file": str(text),
        "status": "refused",
        "error": {"code": "unsupported_media_type", "status": 415, "detail": lines[-1]["error"]["detail"]},
    }
    assert "JPEG" in lines[-1]["error"]["detail"], "the detail says what is accepted"


def test_a_refused_image_is_reported_with_its_problem_and_the_others_still_classified(
    folder: Path, env: dict[str, str]
) -> None:
    empty = folder / "empty.jpg"
    empty.write_bytes(bad_inputs()["empty"])

    run = visionq("classify", "cat.jpg", "empty.jpg", env=env, cwd=folder)

    assert run.returncode == 1
    assert run.stderr.startswith("empty.jpg: error[invalid_image]: the uploaded file is empty"), run.stderr
    row = next(line for line in run.stdout.splitlines() if line.startswith("cat.jpg "))
    assert any(name in row for name in ("Egyptian cat", "tabby", "tiger cat")), run.stdout
    assert "refused: invalid_image" in run.stdout


def test_quoted_globs_are_expanded_by_the_cli(folder: Path, env: dict[str, str]) -> None:
    run = visionq("classify", str(folder / "*.jpg"), "--json", env=env)

    assert run.returncode == 0, run.stderr
    assert [Path(line["file"]).name for line in json_lines(run.stdout)] == ["cat.jpg", "grey.jpg", "rotated.jpg"]


def test_no_wait_then_status_watch_and_result_follow_the_job(folder: Path, env: dict[str, str]) -> None:
    submitted = visionq("classify", str(folder / "cat.jpg"), "--no-wait", "--json", "--priority", "high", env=env)
    assert submitted.returncode == 0, submitted.stderr
    (accepted,) = json_lines(submitted.stdout)
    assert accepted["status"] == "pending"
    assert accepted["priority"] == "high"
    job_id = accepted["job_id"]

    watched = visionq("watch", job_id, "--json", env=env)
    assert watched.returncode == 0, watched.stderr
    *updates, outcome = json_lines(watched.stdout)
    assert updates
    assert all(update["job_id"] == job_id and "stage" in update for update in updates)
    progress = [update["progress"] for update in updates]
    assert progress == sorted(progress)
    assert updates[-1]["status"] == "completed"
    assert outcome["status"] == "completed"
    assert outcome["predictions"][0]["class_id"] in CAT_CLASSES

    status = visionq("status", job_id, "--json", env=env)
    assert status.returncode == 0
    assert json_lines(status.stdout)[0] | {"updated_at": None} == updates[-1] | {"updated_at": None}

    result = visionq("result", job_id, env=env)
    assert result.returncode == 0
    assert job_id in result.stdout
    assert any(name in result.stdout for name in ("Egyptian cat", "tabby"))

    shown = visionq("status", job_id, env=env)
    assert "completed" in shown.stdout
    assert "100%" in shown.stdout


def test_watch_in_a_terminal_draws_the_bar_to_completion(folder: Path, env: dict[str, str]) -> None:
    submitted = visionq("classify", str(folder / "cat.png"), "--no-wait", "--json", env=env)
    job_id = json_lines(submitted.stdout)[0]["job_id"]

    status, screen = run_in_terminal(
        [sys.executable, "-m", "visionq", "watch", job_id], env=env, timeout=COMMAND_TIMEOUT
    )

    assert status == 0, screen
    assert any(job_id in line and "100%" in line and "completed" in line for line in screen.splitlines()), screen
    assert "Egyptian cat" in screen or "tabby" in screen


def test_an_unknown_job_is_a_problem_and_exit_status_one(env: dict[str, str]) -> None:
    for command in ("status", "result", "watch"):
        run = visionq(command, "no-such-job", env=env)
        assert run.returncode == 1, command
        assert run.stderr.startswith("error[not_found]: "), run.stderr

    run = visionq("result", "no-such-job", "--json", env=env)
    assert run.returncode == 1
    assert json_lines(run.stdout)[0]["error"]["code"] == "not_found"


def test_an_unknown_model_is_refused_for_every_image(folder: Path, env: dict[str, str]) -> None:
    run = visionq("classify", str(folder / "cat.jpg"), "--model", "no-such-model", "--json", env=env)

    assert run.returncode == 1
    assert json_lines(run.stdout)[0]["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["classify", "no/such/file.jpg"], id="missing-file"),
        pytest.param(["classify", "no/such/*.jpg"], id="glob-matching-nothing"),
        pytest.param(["classify", "{folder}", "--top-k", "0"], id="top-k-out-of-range"),
        pytest.param(["classify", "{folder}", "--priority", "asap"], id="unknown-priority"),
        pytest.param(["classify"], id="no-paths"),
        pytest.param(["status"], id="no-job-id"),
    ],
)
def test_usage_errors_exit_two_and_submit_nothing(args: list[str], folder: Path, env: dict[str, str]) -> None:
    before = _jobs_submitted(env)

    run = visionq(*(arg.format(folder=folder) for arg in args), env=env)

    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    assert _jobs_submitted(env) == before


def test_an_unreachable_api_is_reported_with_the_url_to_check(folder: Path, env: dict[str, str]) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    run = visionq("classify", str(folder / "cat.jpg"), "--url", closed, env=env)

    assert run.returncode == 1
    assert run.stderr.startswith(f"error[connection_failed]: could not reach the visionq API at {closed}: ")
    assert "--url" in run.stderr
    assert len(run.stderr.splitlines()) == 1


def _jobs_submitted(env: dict[str, str]) -> float:
    """The API's count of POST /classify requests, from its own metrics."""
    metrics = httpx.get(f"{env['VISIONQ_URL']}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("visionq_http_requests_total{") and 'route="/classify"' in line
    )


@pytest.mark.timeout(PREPARE_TIMEOUT + 60)
def test_prepare_makes_the_checked_exports_a_worker_will_find(tmp_path: Path) -> None:
    # The exact model is exported from nothing; its int8 build, minutes to make on a busy machine, comes from the
    # session's cache, as an image built with `visionq prepare` brings it (the session's own prepare made it).
    for part in model_cache().glob("efficientnet-lite0-int8-*"):
        if part.suffix in (".onnx", ".json"):
            shutil.copy(part, tmp_path / part.name)
    env = {**os.environ, "VISIONQ_MODEL_CACHE_DIR": str(tmp_path), "COLUMNS": "200"}

    made = visionq("prepare", "latest", "efficientnet-lite0-int8", env=env, timeout=PREPARE_TIMEOUT)
    unknown = visionq("prepare", "no-such-model", env=env)

    assert re.search(r"efficientnet-lite0@1\s+│\s+onnx\s+│\s+100\.0% of 64", made.stdout), made.stdout
    exports = sorted(p.name for p in tmp_path.glob("*.onnx"))
    assert all(Path(tmp_path / name).with_suffix(".json").exists() for name in exports), "each with its check"
    why = int8_unsupported()
    if why is None:
        assert made.returncode == 0, made.stderr
        assert re.search(r"efficientnet-lite0-int8@1\s+│\s+onnx\s+│\s+\d+\.\d% of 256", made.stdout), made.stdout
        assert [name.rsplit("-", 1)[0] for name in exports] == ["efficientnet-lite0", "efficientnet-lite0-int8"]
    else:  # the others are made; the refused one is listed, with why, and the exit status says so
        assert made.returncode == 1
        assert re.search(r"efficientnet-lite0-int8@1\s+│\s+not prepared", made.stdout), made.stdout
        assert why in " ".join(made.stderr.split()), made.stderr
        assert [name.rsplit("-", 1)[0] for name in exports] == ["efficientnet-lite0"]
    assert unknown.returncode == 2
    assert "Unknown model 'no-such-model'" in unknown.stderr


def test_a_folder_sent_as_one_batch_shows_one_bar_and_writes_its_results_file(
    folder: Path, env: dict[str, str]
) -> None:
    status, screen = run_in_terminal(
        [sys.executable, "-m", "visionq", "classify", "--batch", folder.name, "--output", "results.csv"],
        env=env,
        cwd=folder.parent,
        timeout=COMMAND_TIMEOUT,
    )
    with (folder.parent / "results.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))

    assert status == 0, screen
    bars = re.findall(r"batch\s+[━╺╸]+\s+(\d+)/(\d+)", screen)
    assert bars, screen
    assert bars[-1] == ("5", "5"), "one bar, to the end"
    assert sorted(Path(row["name"]).name for row in rows) == sorted(FOLDER), "a directory gives its image files"
    assert {row["status"] for row in rows} == {"completed"}
    assert {int(row["class_id"]) for row in rows} <= CAT_CLASSES
    assert "5 results in results.csv" in screen


def test_an_archive_batch_with_a_bad_member_fails_the_run_and_reports_it(
    folder: Path, env: dict[str, str], tmp_path: Path
) -> None:
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as packed:
        for path in sorted(folder.iterdir()):
            packed.write(path, path.name)
    run = visionq("classify", "--batch", str(archive), "--output", str(tmp_path / "out.jsonl"), env=env)
    lines = json_lines((tmp_path / "out.jsonl").read_text())

    assert run.returncode == 1, run.stdout + run.stderr
    assert [line["name"] for line in lines] == sorted(path.name for path in folder.iterdir())
    bad = next(line for line in lines if line["name"] == "notes.txt")
    assert (bad["status"], bad["error"]["code"]) == ("failed", "unsupported_media_type")
    assert sum(line["status"] == "completed" for line in lines) == len(FOLDER)
