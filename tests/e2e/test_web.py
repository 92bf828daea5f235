"""The web page in a real browser (Debian's Chromium through Playwright) against a real `visionq serve`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageOps
from playwright.sync_api import Browser, Page, Request, ViewportSize, WebSocketRoute, expect, sync_playwright

from e2e.serving import serving
from environment import process_environ
from tests_support import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
CAT = REPO / "examples" / "cat.jpg"
CAT_NAMES = re.compile("Egyptian cat|tabby|tiger cat")
#: Milliseconds a page may take to show a finished job (the first one also waits for the worker's model).
RESULT_TIMEOUT_MS = 60_000
DESKTOP: ViewportSize = {"width": 1200, "height": 800}
PHONE: ViewportSize = {"width": 360, "height": 740}
#: A test knob, not a setting: VISIONQ_TEST_* variables are kept in the suite's environment.
SAVE_SCREENSHOTS = os.environ.get("VISIONQ_TEST_SCREENSHOTS") == "1"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving(tmp_path_factory.mktemp("serve")) as url:
        yield url


@pytest.fixture(scope="module")
def secure_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`visionq serve` with authentication required, and a user key made by `visionq keys create`."""
    home = tmp_path_factory.mktemp("secure-serve")
    settings = {"auth": "required", "auth_secret": "browser-suite-secret-" + "x" * 24}
    env = process_environ()
    env["VISIONQ_DATA_DIR"] = str(home / "data")
    made = subprocess.run(
        [sys.executable, "-m", "visionq", "keys", "create", "--role", "user", "--name", "browser"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    with serving(home, **settings) as url:
        yield url, made.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"the browser tests drive Debian's Chromium at {CHROMIUM}, which is missing: "
            "install it with `apt-get install chromium` (scripts/install-browser does this; CI runs it)"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page in its own context: its own localStorage, a desktop-sized window."""
    context = browser.new_context(viewport=DESKTOP)
    yield context.new_page()
    context.close()


def upload(page: Page, *files: Path) -> None:
    page.locator("#files").set_input_files(list(files))


def expect_finished(page: Page, name: str) -> None:
    """Waits until the card of `name` shows a completed progress bar and its top-5."""
    card = page.locator(".job", has=page.get_by_role("heading", name=name, exact=True))
    expect(card.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100", timeout=RESULT_TIMEOUT_MS)
    expect(card.locator(".prediction")).to_have_count(5, timeout=RESULT_TIMEOUT_MS)


def test_a_cat_photo_shows_its_classes_with_confidence_bars(page: Page, service: str, tmp_path: Path) -> None:
    page.goto(service)
    upload(page, CAT)
    expect_finished(page, "cat.jpg")

    card = page.locator(".job").first
    top = card.locator(".prediction").first
    expect(top.locator(".pred-name")).to_have_text(CAT_NAMES)
    expect(top.locator(".pred-value")).to_have_text(re.compile(r"^\d+\.\d%$"))
    bar = top.locator(".bar-fill").bounding_box()
    track = top.locator(".bar").bounding_box()
    assert bar is not None
    assert track is not None
    assert track["width"] * 0.2 < bar["width"] <= track["width"], "the top class's bar shows its confidence"
    expect(card.get_by_role("img", name="cat.jpg")).to_be_visible()
    expect(card.locator(".meta")).to_contain_text("451 × 300 JPEG")
    expect(page.locator("#recent")).to_contain_text(CAT_NAMES)

    shots = REPO / "docs" / "images" if SAVE_SCREENSHOTS else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=shots / "web.png", animations="disabled")


def test_a_text_file_is_refused_with_the_problem_detail(page: Page, service: str, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture\n")
    problem = httpx.post(f"{service}/classify", files={"file": ("notes.txt", notes.read_bytes())}).json()

    page.goto(service)
    upload(page, notes)

    card = page.locator(".job", has=page.get_by_role("heading", name="notes.txt"))
    expect(card.locator(".job-stage")).to_have_text(problem["title"])
    expect(card.locator(".job-problem")).to_contain_text(problem["detail"], ignore_case=True)
    expect(card.get_by_role("progressbar")).to_be_hidden()
    expect(page.locator("#recent-empty")).to_be_visible()


def test_two_images_at_once_both_reach_100_percent(page: Page, service: str, tmp_path: Path) -> None:
    mirrored = tmp_path / "mirrored-cat.png"
    with Image.open(CAT) as cat:
        ImageOps.mirror(cat).save(mirrored)

    page.goto(service)
    upload(page, CAT, mirrored)

    expect_finished(page, "cat.jpg")
    expect_finished(page, "mirrored-cat.png")
    expect(page.locator(".job .prediction:first-child .pred-name")).to_have_text([CAT_NAMES, CAT_NAMES])


def test_a_session_logs_no_console_errors(page: Page, service: str) -> None:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))

    page.goto(service)
    expect(page.get_by_label("Model")).to_contain_text("efficientnet-lite2 v1")
    upload(page, CAT)
    expect_finished(page, "cat.jpg")
    page.reload()
    page.get_by_role("button", name=re.compile("cat.jpg")).click()
    expect_finished(page, "cat.jpg")

    assert errors == []


def test_recent_jobs_are_remembered_and_reopen_their_result(page: Page, service: str) -> None:
    page.goto(service)
    upload(page, CAT)
    expect_finished(page, "cat.jpg")

    page.reload()
    expect(page.locator(".job")).to_have_count(0)
    entry = page.locator("#recent").get_by_role("button")
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text(CAT_NAMES)
    entry.click()
    expect_finished(page, "cat.jpg")
    expect(page.get_by_role("heading", name="cat.jpg")).to_be_focused()


def test_the_file_picker_is_reached_and_opened_with_the_keyboard(page: Page, service: str) -> None:
    # Playwright turns on file-chooser interception when the first listener is added, without waiting for it:
    # listening from the start makes sure it is on before Enter opens the picker.
    page.on("filechooser", lambda _: None)
    page.goto(service)
    drop_zone = page.get_by_role("button", name=re.compile("Choose images"))
    for _ in range(10):
        page.keyboard.press("Tab")
        if drop_zone.evaluate("element => element === document.activeElement"):
            break
    expect(drop_zone).to_be_focused()
    assert drop_zone.evaluate("element => getComputedStyle(element).outlineStyle") == "solid", "focus is visible"

    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    assert chooser.value.is_multiple()
    chooser.value.set_files(CAT)
    expect_finished(page, "cat.jpg")


def test_on_a_phone_the_result_fits_without_horizontal_scrolling(page: Page, service: str) -> None:
    page.set_viewport_size(PHONE)
    page.goto(service)
    upload(page, CAT)
    expect_finished(page, "cat.jpg")

    card = page.locator(".job").first
    card.scroll_into_view_if_needed()
    box = card.bounding_box()
    assert box is not None
    assert box["x"] >= 0, box
    assert box["x"] + box["width"] <= PHONE["width"], box
    assert box["y"] >= 0, box
    assert box["y"] + box["height"] <= PHONE["height"], box
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_without_a_websocket_the_page_follows_the_job_by_polling(page: Page, service: str) -> None:
    def refuse(socket: WebSocketRoute) -> None:
        socket.close(code=1011, reason="refused by the test")

    page.route_web_socket(re.compile(r"/ws/"), refuse)
    polled: list[str] = []
    page.on("request", lambda request: polled.append(request.url) if "/status/" in request.url else None)

    page.goto(service)
    upload(page, CAT)
    expect_finished(page, "cat.jpg")
    assert polled, "the job was followed through GET /status"


def test_the_api_key_is_remembered_and_sent_over_http_and_the_websocket(page: Page, service: str) -> None:
    key = "vq-test-key"
    page.goto(service)
    page.get_by_label("API key or token").fill(key)
    page.get_by_label("API key or token").press("Enter")
    assert page.url == f"{service}/", "Enter keeps the key out of the address bar"
    page.reload()
    expect(page.get_by_label("API key or token")).to_have_value(key)

    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    with page.expect_request(lambda request: request.url.endswith("/classify")) as submitted:
        upload(page, CAT)
    request: Request = submitted.value
    assert request.headers["x-api-key"] == key
    expect_finished(page, "cat.jpg")
    assert [url for url in sockets if url.endswith(f"?token={key}")], sockets


def test_with_authentication_on_the_page_needs_a_key_and_works_with_one(
    page: Page, secure_service: tuple[str, str]
) -> None:
    url, key = secure_service
    page.goto(url)
    upload(page, CAT)
    refused = page.locator(".job", has=page.get_by_role("heading", name="cat.jpg"))
    expect(refused.locator(".job-problem")).to_contain_text("requires authentication")

    page.get_by_label("API key or token").fill(key)
    page.get_by_label("API key or token").press("Enter")
    upload(page, CAT)
    finished = page.locator(".job", has=page.get_by_role("heading", name="cat.jpg")).filter(
        has=page.locator(".prediction")
    )
    expect(finished.locator(".prediction")).to_have_count(5, timeout=RESULT_TIMEOUT_MS)
    expect(finished.locator(".prediction").first).to_contain_text(CAT_NAMES)


def test_a_folder_goes_as_one_batch_with_one_bar_and_its_results_to_download(
    page: Page, service: str, tmp_path: Path
) -> None:
    photos = tmp_path / "holiday"
    photos.mkdir()
    with Image.open(CAT) as cat:
        for n in range(3):
            cat.rotate(90 * n).save(photos / f"cat-{n}.png")

    page.goto(service)
    page.locator("#folder").set_input_files(photos)

    card = page.locator(".job.batch", has=page.get_by_role("heading", name="holiday", exact=True))
    expect(card.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100", timeout=RESULT_TIMEOUT_MS)
    expect(card.locator(".job-stage")).to_have_text("3 of 3 done")
    with page.expect_download() as download:
        card.get_by_role("link", name="CSV").click()
    lines = Path(download.value.path()).read_text().splitlines()

    assert lines[0].startswith("index,name,job_id,status,class_id")
    assert len(lines) == 4
    assert all(",completed," in line for line in lines[1:])
    assert sorted(line.split(",")[1] for line in lines[1:]) == [f"holiday/cat-{n}.png" for n in range(3)]
