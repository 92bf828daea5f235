"""Settings: the defaults of API.md, `VISIONQ_*` and `.env` overrides, refusals, and their documentation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from conftest import SettingsFactory
from tests_support import REPO
from visionq.cli import config_docs
from visionq.settings import DEFAULT_REDIS_URL, Settings

MIB = 1024 * 1024


def test_defaults_match_the_contract(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    assert settings.max_upload_bytes == 10 * MIB
    assert settings.max_pixels == 40_000_000
    assert settings.result_ttl == 3600
    assert settings.image_ttl == 1800
    assert settings.port == 8000
    assert settings.host == "127.0.0.1"
    assert settings.callback_allow_private is False


def test_the_broker_defaults_to_local_redis_when_no_url_is_set(make_settings: SettingsFactory) -> None:
    assert make_settings().redis_url is None
    assert make_settings().state_url == DEFAULT_REDIS_URL
    assert make_settings(redis_url="redis://cache:6380/2").state_url == "redis://cache:6380/2"


def test_environment_variables_override_the_defaults(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VISIONQ_MAX_UPLOAD_BYTES", "2048")
    monkeypatch.setenv("VISIONQ_PORT", "9001")
    monkeypatch.setenv("VISIONQ_HOST", "0.0.0.0")
    monkeypatch.setenv("VISIONQ_CALLBACK_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("VISIONQ_REDIS_URL", "redis://broker:6379/1")
    settings = make_settings()
    assert settings.max_upload_bytes == 2048
    assert settings.port == 9001
    assert settings.host == "0.0.0.0"
    assert settings.callback_allow_private is True
    assert settings.redis_url == "redis://broker:6379/1"


def test_variables_without_the_prefix_are_ignored(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", "9001")
    assert make_settings().port == 8000


def test_a_dot_env_file_in_the_working_directory_is_read(make_settings: SettingsFactory) -> None:
    Path(".env").write_text("VISIONQ_RESULT_TTL=60\nVISIONQ_MAX_PIXELS=1000\n")
    settings = make_settings()
    assert settings.result_ttl == 60
    assert settings.max_pixels == 1000


def test_the_environment_wins_over_the_dot_env_file(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    Path(".env").write_text("VISIONQ_PORT=9001\n")
    monkeypatch.setenv("VISIONQ_PORT", "9002")
    assert make_settings().port == 9002


@pytest.mark.parametrize(("stale", "visibility"), [(60, 60), (30, 60)])
def test_a_sweeper_faster_than_redelivery_is_refused(
    make_settings: SettingsFactory, stale: int, visibility: int
) -> None:
    with pytest.raises(ValidationError) as caught:
        make_settings(stale_job_after=stale, visibility_timeout=visibility)
    assert "stale_job_after" in str(caught.value)
    assert "visibility_timeout" in str(caught.value)


def test_a_sweeper_slower_than_redelivery_is_accepted(make_settings: SettingsFactory) -> None:
    settings = make_settings(stale_job_after=61, visibility_timeout=60)
    assert (settings.stale_job_after, settings.visibility_timeout) == (61, 60)


@pytest.mark.parametrize(
    "field",
    ["max_upload_bytes", "max_pixels", "result_ttl", "image_ttl", "stale_job_after", "visibility_timeout", "port"],
)
def test_negative_values_are_refused(make_settings: SettingsFactory, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        make_settings(**{field: -1})
    assert field in str(caught.value)


def test_a_negative_value_from_the_environment_is_refused(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VISIONQ_RESULT_TTL", "-5")
    with pytest.raises(ValidationError, match="result_ttl"):
        make_settings()


def test_settings_are_frozen(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_field_is_documented(name: str) -> None:
    description = Settings.model_fields[name].description
    assert description
    assert len(description.split()) >= 4


def test_every_field_appears_in_the_generated_reference() -> None:
    rendered = config_docs.render()
    for name in Settings.model_fields:
        assert f"`VISIONQ_{name.upper()}`" in rendered


def test_the_configuration_page_is_current() -> None:
    page = REPO / "docs" / "configuration.md"
    assert page.read_text() == config_docs.render(), "regenerate: python -m visionq config-docs > docs/configuration.md"


def test_a_hard_time_limit_not_above_the_soft_one_is_refused(make_settings: SettingsFactory) -> None:
    with pytest.raises(ValidationError, match="job_time_limit must exceed job_soft_time_limit"):
        make_settings(job_soft_time_limit=30, job_time_limit=30)


def test_the_cores_are_shared_out_among_a_workers_processes(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("visionq.settings.available_cpus", lambda: 8)

    prefork = {"worker_pool": "prefork"}
    default, two = make_settings(**prefork), make_settings(worker_concurrency=2, **prefork)

    assert (default.concurrency, default.threads_per_job) == (8, 1)
    assert (two.concurrency, two.threads_per_job) == (2, 4)
    assert make_settings(worker_concurrency=16, **prefork).threads_per_job == 1
    assert make_settings(inference_threads=3, **prefork).threads_per_job == 3


def test_a_threads_worker_on_a_cpu_calls_the_model_side_by_side_one_core_each(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("visionq.settings.available_cpus", lambda: 8)

    default = make_settings()
    assert (default.pool.value, default.concurrency, default.batch_size, default.threads_per_job) == (
        "threads",
        8,
        1,
        1,
    )
    assert make_settings(worker_concurrency=2).threads_per_job == 4
    assert make_settings(inference_threads=2).threads_per_job == 2


def test_a_batching_or_solo_worker_gives_its_one_call_every_core(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("visionq.settings.available_cpus", lambda: 8)

    assert make_settings(batch_max_size=8).threads_per_job == 8
    assert make_settings(worker_pool="solo").threads_per_job == 8
    on_gpu = make_settings(device="cuda")
    assert (on_gpu.batch_size, on_gpu.threads_per_job) == (8, 8)
    assert make_settings(device="cuda", batch_max_size=4).batch_size == 4


def test_the_auto_pool_runs_a_lone_job_in_the_consumer_unless_the_broker_is_rabbitmq(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("visionq.settings.available_cpus", lambda: 1)
    amqp = "amqp://guest:guest@127.0.0.1:5672//"

    assert make_settings().worker_pool.value == "auto"
    assert make_settings().pool.value == "solo"
    assert make_settings(worker_concurrency=2).pool.value == "threads"
    assert make_settings(broker_url=amqp).pool.value == "threads", "its consumer must answer the broker's heartbeats"
    assert make_settings(worker_pool="threads").pool.value == "threads", "a pool asked for is the pool run"
    assert make_settings(worker_pool="prefork").pool.value == "prefork"
    monkeypatch.setattr("visionq.settings.available_cpus", lambda: 4)
    assert make_settings().pool.value == "threads"
    assert make_settings(worker_concurrency=1).pool.value == "solo"


def test_the_model_cache_follows_xdg_unless_set(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("VISIONQ_MODEL_CACHE_DIR")  # the tests' own cache (conftest.clean_environ)

    assert make_settings().model_cache == tmp_path / "visionq"
    assert make_settings(model_cache_dir=tmp_path / "mine").model_cache == tmp_path / "mine"


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        ("https://models.example.com/repo", "must be a folder or s3://bucket/prefix, not a https:// URL"),
        ("s3:///models", "names no bucket"),
        ("  ", "is empty"),
    ],
)
def test_a_model_repository_is_a_folder_or_an_s3_url(
    make_settings: SettingsFactory, location: str, problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        make_settings(model_repository=location)
    assert make_settings(model_repository="s3://bucket/models").model_repository_poll == 30.0
    assert make_settings(model_repository="/srv/models").model_repository == "/srv/models"


def test_the_broker_is_the_job_state_redis_unless_set(make_settings: SettingsFactory) -> None:
    settings = make_settings(redis_url="redis://redis.internal:6380/3")
    assert settings.broker == settings.state_url == "redis://redis.internal:6380/3"
    assert not settings.broker_apart


@pytest.mark.parametrize(
    "broker",
    ["amqp://guest:guest@rabbit:5672//", "redis://queue.internal:6379/0", "redis://redis.internal:6380/4"],
)
def test_a_broker_on_another_server_or_database_is_apart(make_settings: SettingsFactory, broker: str) -> None:
    settings = make_settings(redis_url="redis://redis.internal:6380/3", broker_url=broker)
    assert settings.broker == broker
    assert settings.broker_apart, "its messages go through the outbox"


def test_the_job_state_redis_named_as_broker_is_not_apart(make_settings: SettingsFactory) -> None:
    settings = make_settings(redis_url="redis://redis.internal:6380/3", broker_url="redis://redis.internal:6380/3")
    assert not settings.broker_apart


def test_with_sentinels_the_broker_goes_through_them_to_the_state_database(make_settings: SettingsFactory) -> None:
    settings = make_settings(
        redis_url="redis://:secret@unused/2", redis_sentinels="s0:26379, s1:26380,s2", redis_sentinel_master="vq"
    )
    assert settings.sentinel_addresses == [("s0", 26379), ("s1", 26380), ("s2", 26379)]
    assert settings.broker == "sentinel://s0:26379/2;sentinel://s1:26380/2;sentinel://s2:26379/2"


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"redis_sentinels": "s0:26379"}, "SENTINEL_MASTER"),
        ({"redis_sentinels": " , ", "redis_sentinel_master": "vq"}, "empty"),
        ({"redis_sentinels": "s0:port", "redis_sentinel_master": "vq"}, "host:port"),
        ({"redis_url": "redis://a:6379/0", "broker_url": "kafka://k:9092"}, "must be one of"),
        ({"redis_url": "redis://a:6379/0", "broker_url": "sentinel://s0:26379/0"}, "SENTINEL_MASTER"),
    ],
)
def test_a_redis_topology_that_cannot_work_is_refused_with_why(
    make_settings: SettingsFactory, overrides: dict[str, str], why: str
) -> None:
    with pytest.raises(ValidationError, match=why):
        make_settings(**overrides)


@pytest.mark.parametrize(
    ("redis_url", "broker"),
    [
        ("unix:///run/visionq/redis.sock", "redis+socket:///run/visionq/redis.sock?virtual_host=0"),
        ("unix:///run/visionq/redis.sock?db=3", "redis+socket:///run/visionq/redis.sock?virtual_host=3"),
        ("unix://:secret@/run/r.sock?db=2&health=1", "redis+socket://:secret@/run/r.sock?virtual_host=2&health=1"),
    ],
)
def test_a_job_state_redis_on_a_unix_socket_is_the_broker_as_kombu_names_it(
    make_settings: SettingsFactory, redis_url: str, broker: str
) -> None:
    settings = make_settings(redis_url=redis_url)
    assert settings.state_url == redis_url, "redis-py's own form"
    assert settings.broker == broker
    assert not settings.broker_apart
    assert not make_settings(redis_url=redis_url, broker_url=redis_url).broker_apart, "the same server named twice"
