"""The Python SDK (`visionq.Client`, `visionq.AsyncClient`) against a real stack: API, Redis, worker, model.

The WebSocket and polling paths are told apart without mocks: a client whose HTTP address is a closed port
can only succeed over the WebSocket, and one whose WebSocket address is a closed port (or a real WebSocket
server that drops every connection) can only succeed by polling.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import aclosing, contextmanager
from pathlib import Path

import pytest
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

from factories import bad_inputs, cat_variants
from integration.conftest import RedisFactory
from integration.stack import FAST_RECOVERY, ApiServer, WorkerProcess
from ports import free_port
from visionq import AsyncClient, Client
from visionq.client import (
    BatchStatus,
    ConflictError,
    ConnectionFailed,
    FailureBody,
    JobTimeout,
    ModelNotFoundError,
    NotFinished,
    NotFoundError,
    Outcome,
    ProblemError,
    ResultBody,
    StatusBody,
    UnsupportedMediaTypeError,
)
from visionq.settings import Settings
from visionq.wire.states import JobStatus

Stack = tuple[Settings, WorkerProcess, ApiServer]

CAT = cat_variants()["jpeg"]
TEXT = bad_inputs()["text"]
#: ImageNet's tabby, tiger cat and Egyptian cat: what a built-in model, int8 builds included, may call the test photo.
CAT_CLASSES = {281, 282, 285}
#: Seconds any one job may take on the shared stack before a test fails.
JOB_TIMEOUT = 60.0
BATCH = 20


def top1(outcome: Outcome | ProblemError) -> int:
    assert isinstance(outcome, ResultBody), f"expected predictions, got {outcome!r}"
    return outcome.predictions[0].class_id


def assert_progress_ends_completed(seen: list[StatusBody]) -> None:
    assert seen, "on_status was never called"
    progress = [status.progress for status in seen]
    assert progress == sorted(progress), f"progress went down: {progress}"
    assert all(a != b for a, b in zip(seen, seen[1:], strict=False)), "the same status was reported twice in a row"
    assert seen[-1].status is JobStatus.COMPLETED
    assert seen[-1].progress == 100


@pytest.fixture
def url(stack: Stack) -> str:
    return stack[2].url


@pytest.fixture
def ws_url(stack: Stack) -> str:
    return f"ws://127.0.0.1:{stack[2].port}"


@pytest.fixture
def closed_url() -> str:
    """An address where nothing listens: connections to it are refused."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def client(url: str) -> Iterator[Client]:
    with Client(url) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def idle_url(new_redis: RedisFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API whose queue no worker serves: its jobs stay pending until cancelled."""
    settings = Settings(
        **FAST_RECOVERY,
        redis_url=new_redis("sdk-idle"),
        queue="visionq-test-sdk-idle",
        data_dir=tmp_path_factory.mktemp("idle"),
    )
    server = ApiServer(settings)
    server.start()
    yield server.url
    server.stop()


@contextmanager
def dropping_websocket(upstream: str) -> Iterator[str]:
    """A real WebSocket server that relays the first message of the real one for the same path, then drops
    the connection (close code 1011) before the result arrives."""

    def relay_then_drop(ws: ServerConnection) -> None:
        with connect(f"{upstream}{ws.request.path if ws.request else '/'}", open_timeout=10) as real:
            ws.send(real.recv(timeout=10))
        ws.close(1011, "the test relay drops every connection after one message")

    with serve(relay_then_drop, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, name="dropping-websocket", daemon=True)
        thread.start()
        try:
            yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
        finally:
            server.shutdown()
            thread.join(10)


# --- the blocking client -------------------------------------------------------------------------------


def test_submit_takes_a_path_bytes_and_a_file_object(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "cat.jpg"
    path.write_bytes(CAT)

    with path.open("rb") as file:
        jobs = [client.submit(str(path)), client.submit(path), client.submit(CAT), client.submit(file, top_k=3)]

    assert len({job.job_id for job in jobs}) == 4
    assert all(job.status is JobStatus.PENDING for job in jobs)
    outcomes = [client.wait(job, JOB_TIMEOUT) for job in jobs]
    assert [top1(outcome) in CAT_CLASSES for outcome in outcomes] == [True] * 4
    assert [len(outcome.predictions) for outcome in outcomes if isinstance(outcome, ResultBody)] == [5, 5, 5, 3]


def test_wait_follows_the_websocket_with_non_decreasing_progress(client: Client, ws_url: str, closed_url: str) -> None:
    job = client.submit(CAT, model="efficientnet-lite2")
    seen: list[StatusBody] = []

    # Its HTTP address refuses connections, so this client can only finish the wait over the WebSocket.
    with Client(closed_url, ws_url=ws_url) as websocket_only:
        outcome = websocket_only.wait(job.job_id, JOB_TIMEOUT, on_status=seen.append)

    assert top1(outcome) in CAT_CLASSES
    assert outcome.job_id == job.job_id
    assert_progress_ends_completed(seen)


def test_wait_polls_when_the_websocket_cannot_be_opened(url: str, closed_url: str) -> None:
    seen: list[StatusBody] = []
    with Client(url, ws_url=closed_url) as polling:
        outcome = polling.classify(CAT, timeout=JOB_TIMEOUT, on_status=seen.append)

    assert top1(outcome) in CAT_CLASSES
    assert_progress_ends_completed(seen)


def test_wait_polls_when_the_websocket_drops_before_the_result(url: str, ws_url: str) -> None:
    seen: list[StatusBody] = []
    with dropping_websocket(ws_url) as relay, Client(url, ws_url=relay) as dropped:
        outcome = dropped.classify(CAT, timeout=JOB_TIMEOUT, on_status=seen.append)

    assert top1(outcome) in CAT_CLASSES
    assert_progress_ends_completed(seen)


def test_classify_many_yields_every_image_as_it_finishes(client: Client, tmp_path: Path) -> None:
    paths = [tmp_path / f"cat-{index:02}.jpg" for index in range(BATCH)]
    for path in paths:
        path.write_bytes(CAT)

    outcomes = dict(client.classify_many(paths, concurrency=4, timeout=JOB_TIMEOUT))

    assert set(outcomes) == set(paths)
    assert {path.name: top1(outcome) in CAT_CLASSES for path, outcome in outcomes.items()} == {
        path.name: True for path in paths
    }


def test_leaving_classify_many_early_leaves_the_client_usable(client: Client) -> None:
    batch = client.classify_many([CAT] * 6, concurrency=3, timeout=JOB_TIMEOUT)
    image, outcome = next(batch)
    batch.close()

    assert image is CAT
    assert top1(outcome) in CAT_CLASSES
    assert top1(client.classify(CAT, timeout=JOB_TIMEOUT)) in CAT_CLASSES


def test_classify_many_needs_a_positive_concurrency(client: Client) -> None:
    with pytest.raises(ValueError, match="concurrency must be at least 1, not 0"):
        next(client.classify_many([CAT], concurrency=0))


def test_a_refused_image_raises_its_problem(client: Client) -> None:
    with pytest.raises(UnsupportedMediaTypeError) as refused:
        client.submit(TEXT)

    assert refused.value.code == "unsupported_media_type"
    assert refused.value.status == 415
    assert "not a supported image type" in refused.value.detail
    assert refused.value.title == "Unsupported media type"


def test_classify_many_yields_a_refused_image_as_its_exception(client: Client) -> None:
    images = [CAT, TEXT, cat_variants()["png"]]

    outcomes = list(client.classify_many(images, concurrency=2, timeout=JOB_TIMEOUT))

    assert len(outcomes) == 3
    by_image = {id(image): outcome for image, outcome in outcomes}
    refused = by_image[id(TEXT)]
    assert isinstance(refused, UnsupportedMediaTypeError)
    assert (refused.code, refused.status) == ("unsupported_media_type", 415)
    assert top1(by_image[id(images[0])]) in CAT_CLASSES
    assert top1(by_image[id(images[2])]) in CAT_CLASSES


def test_an_unknown_model_raises_model_not_found(client: Client) -> None:
    with pytest.raises(ModelNotFoundError) as refused:
        client.submit(CAT, model="resnet50")

    assert refused.value.status == 422
    assert "efficientnet-lite0" in refused.value.detail


def test_cancelling_a_finished_job_raises_conflict(client: Client) -> None:
    job = client.submit(CAT)
    client.wait(job, JOB_TIMEOUT)

    with pytest.raises(ConflictError) as conflict:
        client.cancel(job)

    assert conflict.value.status == 409
    assert "already completed" in conflict.value.detail


def test_status_result_cancel_and_wait_of_an_unknown_job_raise_not_found(client: Client) -> None:
    for call in (client.status, client.result, client.cancel, client.wait):
        with pytest.raises(NotFoundError) as missing:
            call("00000000-0000-4000-8000-000000000000")
        assert (missing.value.code, missing.value.status) == ("not_found", 404)


def test_a_job_no_worker_takes_times_out_then_cancels(idle_url: str) -> None:
    with Client(idle_url) as idle:
        job = idle.submit(CAT)
        with pytest.raises(NotFinished) as running:
            idle.result(job)
        assert running.value.status.status is JobStatus.PENDING

        with pytest.raises(TimeoutError) as timed_out:
            idle.wait(job, timeout=0.3)
        assert isinstance(timed_out.value, JobTimeout)
        assert timed_out.value.status is not None
        assert timed_out.value.status.status is JobStatus.PENDING

        cancelled = idle.cancel(job)
        outcome = idle.wait(job, JOB_TIMEOUT)

    assert cancelled.status is JobStatus.CANCELLED
    assert isinstance(outcome, FailureBody)
    assert outcome.status is JobStatus.CANCELLED


def test_models_lists_the_catalog(client: Client) -> None:
    names = {model.name for model in client.models()}
    assert {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"} <= names


def test_the_url_comes_from_visionq_url(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIONQ_URL", url)
    with Client() as from_env:
        assert from_env.url == url
        assert from_env.classify(CAT, timeout=JOB_TIMEOUT).status is JobStatus.COMPLETED


def test_the_url_argument_wins_over_visionq_url(url: str, closed_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIONQ_URL", closed_url)
    with Client(url) as explicit:
        assert explicit.classify(CAT, timeout=JOB_TIMEOUT).status is JobStatus.COMPLETED


def test_the_url_defaults_to_the_local_service() -> None:
    with Client() as default:
        assert default.url == "http://127.0.0.1:8000"
        assert default.ws_url == "ws://127.0.0.1:8000"


def test_an_unreachable_api_raises_connection_failed(closed_url: str) -> None:
    with Client(closed_url) as unreachable, pytest.raises(ConnectionFailed) as failed:
        unreachable.submit(CAT)

    assert isinstance(failed.value, ConnectionError)
    assert closed_url in str(failed.value)


def test_import_visionq_does_not_import_the_sdk() -> None:
    probe = (
        "import sys, visionq\n"
        "assert 'httpx' not in sys.modules and 'visionq.client' not in sys.modules, 'imported too early'\n"
        "assert visionq.Client.__name__ == 'Client' and visionq.AsyncClient.__name__ == 'AsyncClient'\n"
        "assert 'httpx' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)


# --- the asyncio client --------------------------------------------------------------------------------


def test_async_submit_takes_a_path_bytes_and_a_file_object_and_waits_over_the_websocket(
    url: str, ws_url: str, closed_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "cat.jpg"
    path.write_bytes(CAT)
    seen: list[StatusBody] = []
    others: list[StatusBody] = []

    async def scenario() -> list[Outcome]:
        async with AsyncClient(url) as sdk, AsyncClient(closed_url, ws_url=ws_url) as websocket_only:
            with path.open("rb") as file:
                jobs = [await sdk.submit(path), await sdk.submit(CAT), await sdk.submit(file)]
            first = await websocket_only.wait(jobs[0], JOB_TIMEOUT, on_status=seen.append)
            # With a progress callback, so that these too are followed over the WebSocket (without one, the
            # client asks GET /result to wait, which its closed HTTP address refuses).
            rest = [await websocket_only.wait(job.job_id, JOB_TIMEOUT, on_status=others.append) for job in jobs[1:]]
            return [first, *rest]

    outcomes = asyncio.run(scenario())

    assert [top1(outcome) in CAT_CLASSES for outcome in outcomes] == [True] * 3
    assert_progress_ends_completed(seen)


def test_async_wait_polls_when_the_websocket_cannot_be_opened(url: str, closed_url: str) -> None:
    seen: list[StatusBody] = []

    async def scenario() -> Outcome:
        async with AsyncClient(url, ws_url=closed_url) as polling:
            return await polling.classify(CAT, timeout=JOB_TIMEOUT, on_status=seen.append)

    assert top1(asyncio.run(scenario())) in CAT_CLASSES
    assert_progress_ends_completed(seen)


def test_async_wait_polls_when_the_websocket_drops_before_the_result(url: str, ws_url: str) -> None:
    seen: list[StatusBody] = []

    async def scenario(relay: str) -> Outcome:
        async with AsyncClient(url, ws_url=relay) as dropped:
            return await dropped.classify(CAT, timeout=JOB_TIMEOUT, on_status=seen.append)

    with dropping_websocket(ws_url) as relay:
        assert top1(asyncio.run(scenario(relay))) in CAT_CLASSES
    assert_progress_ends_completed(seen)


def test_async_classify_many_yields_twenty_results_and_a_refusal(url: str) -> None:
    images = [cat_variants()["jpeg"] if index % 2 else cat_variants()["png"] for index in range(BATCH)]
    images.insert(7, TEXT)

    async def scenario() -> list[tuple[bytes, Outcome | ProblemError]]:
        async with AsyncClient(url) as sdk:
            return [pair async for pair in sdk.classify_many(images, concurrency=4, timeout=JOB_TIMEOUT)]

    outcomes = asyncio.run(scenario())

    assert len(outcomes) == BATCH + 1
    refused = [outcome for image, outcome in outcomes if image is TEXT]
    assert len(refused) == 1
    assert isinstance(refused[0], UnsupportedMediaTypeError)
    assert [top1(outcome) in CAT_CLASSES for image, outcome in outcomes if image is not TEXT] == [True] * BATCH


def test_async_leaving_classify_many_early_cancels_the_rest(url: str) -> None:
    async def scenario() -> tuple[Outcome | ProblemError, Outcome]:
        async with AsyncClient(url) as sdk:
            async with aclosing(sdk.classify_many([CAT] * 6, concurrency=3, timeout=JOB_TIMEOUT)) as batch:
                _, first = await anext(batch)
            with pytest.raises(ValueError, match="concurrency must be at least 1"):
                await anext(sdk.classify_many([CAT], concurrency=0))
            return first, await sdk.classify(CAT, timeout=JOB_TIMEOUT)

    first, after = asyncio.run(scenario())

    assert top1(first) in CAT_CLASSES
    assert top1(after) in CAT_CLASSES


def test_async_refusals_raise_their_problems(url: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(url) as sdk:
            with pytest.raises(UnsupportedMediaTypeError) as refused:
                await sdk.submit(TEXT)
            assert (refused.value.code, refused.value.status) == ("unsupported_media_type", 415)
            assert refused.value.detail

            with pytest.raises(NotFoundError):
                await sdk.status("00000000-0000-4000-8000-000000000000")
            with pytest.raises(NotFoundError):
                await sdk.wait("00000000-0000-4000-8000-000000000000")

            job = await sdk.submit(CAT)
            await sdk.wait(job, JOB_TIMEOUT)
            with pytest.raises(ConflictError):
                await sdk.cancel(job)

    asyncio.run(scenario())


def test_async_a_job_no_worker_takes_times_out_then_cancels(idle_url: str) -> None:
    async def scenario() -> tuple[StatusBody, Outcome]:
        async with AsyncClient(idle_url) as idle:
            job = await idle.submit(CAT)
            with pytest.raises(NotFinished):
                await idle.result(job)
            with pytest.raises(JobTimeout):
                await idle.wait(job, timeout=0.3)
            return await idle.cancel(job), await idle.result(job)

    cancelled, outcome = asyncio.run(scenario())

    assert cancelled.status is JobStatus.CANCELLED
    assert isinstance(outcome, FailureBody)
    assert outcome.status is JobStatus.CANCELLED


def test_async_url_comes_from_visionq_url_and_the_argument_wins(
    url: str, closed_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> list[str]:
        async with AsyncClient() as from_env, AsyncClient(closed_url) as explicit:
            await from_env.models()
            with pytest.raises(ConnectionFailed):
                await explicit.models()
            return [from_env.url, explicit.url]

    monkeypatch.setenv("VISIONQ_URL", url)
    assert asyncio.run(scenario()) == [url, closed_url]


def test_a_batch_of_bytes_is_followed_to_its_end_and_its_results_read_in_pages(client: Client) -> None:
    seen: list[BatchStatus] = []
    batch = client.submit_batch([CAT, TEXT, CAT])
    final = batch.wait(JOB_TIMEOUT, on_status=seen.append)
    items = list(batch.results(page=2))

    assert (final.status, final.total, final.counts.completed, final.counts.failed) == ("completed", 3, 2, 1)
    assert seen[-1] == final
    assert [item.index for item in items] == [0, 1, 2], "two pages, in order"
    assert [item.status for item in items] == ["completed", "failed", "completed"]
    assert items[1].error is not None
    assert items[1].error.code == "unsupported_media_type"
    assert {item.predictions[0].class_id for item in (items[0], items[2]) if item.predictions} <= CAT_CLASSES
    assert client.status(items[0].job_id or "").priority == "low", "a batch's default priority"


def test_the_async_client_sends_a_folder_as_one_batch(url: str, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "inner").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(CAT)
    (folder / "inner" / "b.jpg").write_bytes(CAT)
    (folder / "notes.txt").write_text("not an image")

    async def run() -> tuple[BatchStatus, list[str]]:
        async with AsyncClient(url) as client:
            batch = await client.submit_batch(folder)
            final = await batch.wait(JOB_TIMEOUT)
            return final, [item.name async for item in batch.results()]

    final, names = asyncio.run(run())

    assert (final.status, final.counts.completed) == ("completed", 2)
    assert [Path(name).name for name in names] == ["a.jpg", "b.jpg"], "a folder gives its image files, sorted"
