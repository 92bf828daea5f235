"""The security suite: real API processes on a real Redis, with authentication required.

Who may do what (401, 403, another's job is 404), what makes a token invalid, revocation, refresh rotation,
rate limits shared by two API processes, and X-Forwarded-For only from trusted proxies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from factories import cat_variants
from integration.conftest import StackFactory
from integration.stack import ApiServer, submit, wait_for, wait_terminal
from visionq.api.ratelimit import WINDOW
from visionq.settings import Settings

SECRET = "s" * 16 + "-security-suite-secret-0123456789"
CAT = cat_variants()["jpeg"]
#: Seconds a job may take to reach the archive (GET /jobs) on the test stacks.
ARCHIVE_TIMEOUT = 15.0
AUTH = {"auth": "required", "auth_secret": SECRET}
#: Seconds of a rate-limit window a burst of requests is given, so that it falls in one window.
BURST_ROOM = 10.0


def make_key(settings: Settings, role: str, name: str = "") -> str:
    """`visionq keys create` as an operator runs it; the key is alone on the last line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONQ_")}
    env |= {"VISIONQ_DATABASE_URL": settings.archive_url, "VISIONQ_REDIS_URL": settings.state_url}
    made = subprocess.run(
        [sys.executable, "-m", "visionq", "keys", "create", "--role", role, "--name", name],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return made.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def secure(start_stack: StackFactory) -> tuple[Settings, str]:
    settings, _, server = start_stack("secure", worker_pool="solo", **AUTH)
    return settings, server.url


@pytest.fixture(scope="module")
def keys(secure: tuple[Settings, str]) -> dict[str, str]:
    settings, _ = secure
    roles = {"admin": "admin", "alice": "user", "bob": "user"}
    return {who: make_key(settings, role, f"suite {who}") for who, role in roles.items()}


def client(url: str, key: str | None = None, token: str | None = None) -> httpx.Client:
    headers = {"X-API-Key": key} if key else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def alice_job(secure: tuple[Settings, str], keys: dict[str, str]) -> str:
    with client(secure[1], keys["alice"]) as alice:
        job_id: str = submit(alice, CAT).json()["job_id"]
        assert wait_terminal(alice, job_id)["status"] == "completed"
    return job_id


def routes_naming(job_id: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/status/{job_id}"),
        ("GET", f"/result/{job_id}"),
        ("GET", f"/jobs/{job_id}/deliveries"),
        ("DELETE", f"/jobs/{job_id}"),
    ]


def test_the_service_refuses_to_start_with_a_default_secret() -> None:
    for secret in (None, "", "changethis", "short-secret"):
        with pytest.raises(ValueError, match="VISIONQ_AUTH_SECRET"):
            Settings(auth="required", auth_secret=secret)


def test_no_credentials_is_401_everywhere_but_health(secure: tuple[Settings, str], alice_job: str) -> None:
    with client(secure[1]) as anonymous:
        for method, path in [
            ("POST", "/classify"),
            ("GET", "/jobs"),
            ("GET", "/models"),
            ("GET", "/admin/queues"),
            *routes_naming(alice_job),
        ]:
            answer = anonymous.request(method, path)
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.json()["code"] == "unauthorized"
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.get("/health").status_code == 200
        assert anonymous.get("/health/ready").status_code == 200
    with pytest.raises(ConnectionClosed) as closed, connect(ws_url(secure[1], alice_job)) as ws:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


def test_bad_keys_are_401(secure: tuple[Settings, str]) -> None:
    for key in ("nonsense", "vq_abc_def", "vq_" + "0" * 12 + "_" + "x" * 43):
        with client(secure[1], key) as stranger:
            assert stranger.get("/jobs").status_code == 401, key


def test_a_user_on_an_admin_route_is_403(secure: tuple[Settings, str], keys: dict[str, str]) -> None:
    with client(secure[1], keys["alice"]) as alice:
        for method, path in [("GET", "/admin/queues"), ("GET", "/admin/keys"), ("POST", "/admin/keys")]:
            answer = alice.request(method, path, json={"role": "admin"} if method == "POST" else None)
            assert answer.status_code == 403, (method, path)
            assert answer.json()["code"] == "forbidden"
        assert alice.get("/jobs", params={"owner": "key:someone"}).json()["code"] == "forbidden"
    with client(secure[1], keys["admin"]) as admin:
        assert admin.get("/admin/queues").status_code == 200


def test_another_users_job_is_404_on_every_route(
    secure: tuple[Settings, str], keys: dict[str, str], alice_job: str
) -> None:
    with client(secure[1], keys["bob"]) as bob, client(secure[1], keys["alice"]) as alice:
        for method, path in routes_naming(alice_job):
            answer = bob.request(method, path)
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["code"] == "not_found"
        assert alice.get(f"/status/{alice_job}").json()["status"] == "completed", "nothing was cancelled"
        wait_for(lambda: _listed(alice, alice_job), ARCHIVE_TIMEOUT, "alice's job in her list")
        assert not _listed(bob, alice_job)

    with pytest.raises(ConnectionClosed) as closed, connect(ws_url(secure[1], alice_job, keys["bob"])) as ws:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4404

    with client(secure[1], keys["admin"]) as admin:
        assert admin.get(f"/result/{alice_job}").status_code == 200, "an admin sees every job"
        owner = admin.get("/admin/keys").json()
        alice_id = next(key["owner"] for key in owner if key["name"] == "suite alice")
        assert any(job["job_id"] == alice_job for job in admin.get("/jobs", params={"owner": alice_id}).json()["jobs"])


def test_the_owner_follows_its_job_over_the_websocket_with_a_query_token(
    secure: tuple[Settings, str], keys: dict[str, str], alice_job: str
) -> None:
    with connect(ws_url(secure[1], alice_job, keys["alice"])) as ws:
        assert '"status":"completed"' in str(ws.recv(timeout=10)).replace(" ", "")


def test_tokens_stand_for_their_key_and_refresh_tokens_rotate(
    secure: tuple[Settings, str], keys: dict[str, str], alice_job: str
) -> None:
    with client(secure[1], keys["alice"]) as alice:
        issued = alice.post("/auth/token")
    assert issued.status_code == 200
    tokens = issued.json()
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900

    with client(secure[1], token=tokens["access_token"]) as bearer:
        assert bearer.get(f"/status/{alice_job}").status_code == 200
        rotated = bearer.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert rotated.status_code == 200
        assert rotated.json()["refresh_token"] != tokens["refresh_token"]
        reused = bearer.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert reused.status_code == 401, "a refresh token works once"
    with client(secure[1], token=rotated.json()["access_token"]) as refreshed:
        assert refreshed.get(f"/status/{alice_job}").status_code == 200


def test_a_refresh_token_that_is_not_one_is_401(secure: tuple[Settings, str], keys: dict[str, str]) -> None:
    with client(secure[1], keys["alice"]) as alice:
        access = alice.post("/auth/token").json()["access_token"]
    with client(secure[1]) as anonymous:
        for token in ("garbage", access, "x" * 4096):  # an access token, or a provider's JWT, is a few KB at most
            refused = anonymous.post("/auth/refresh", json={"refresh_token": token})
            assert refused.status_code == 401, token[:20]
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["code"] == "unauthorized"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"exp": -60}, id="expired"),
        pytest.param({"aud": "someone-else"}, id="wrong-audience"),
        pytest.param({"iss": "someone-else"}, id="wrong-issuer"),
        pytest.param({"secret": "another-secret-another-secret-xx"}, id="wrong-secret"),
        pytest.param({"tamper": True}, id="tampered"),
        pytest.param({"alg": "none"}, id="unsigned"),
        pytest.param({"drop": "kid"}, id="missing-claim"),
    ],
)
def test_invalid_tokens_are_401(
    secure: tuple[Settings, str], keys: dict[str, str], alice_job: str, change: dict[str, Any]
) -> None:
    key_id = keys["alice"].split("_")[1]
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "visionq",
        "aud": "visionq-api",
        "sub": f"key:{key_id}",
        "kid": key_id,
        "role": "user",
        "iat": now,
        "exp": now + change.get("exp", 600),
    }
    claims |= {name: change[name] for name in ("aud", "iss") if name in change}
    claims.pop(change.get("drop", ""), None)
    if change.get("alg") == "none":
        token = jwt.encode(claims, "", algorithm="none")  # PyJWT takes "" as no key
    else:
        token = jwt.encode(claims, change.get("secret", SECRET), algorithm="HS256")
    if change.get("tamper"):
        header, payload, signature = token.split(".")
        token = ".".join((header, payload, signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")))

    with client(secure[1], token=token) as bearer:
        answer = bearer.get(f"/status/{alice_job}")
    assert answer.status_code == 401, change
    assert answer.json()["code"] == "unauthorized"


def test_a_well_made_token_is_accepted(secure: tuple[Settings, str], keys: dict[str, str], alice_job: str) -> None:
    """The control for the test above: the same claims, unchanged, pass."""
    key_id = keys["alice"].split("_")[1]
    now = int(time.time())
    claims = {"iss": "visionq", "aud": "visionq-api", "sub": f"key:{key_id}", "kid": key_id, "role": "user"}
    token = jwt.encode(claims | {"iat": now, "exp": now + 600}, SECRET, algorithm="HS256")
    with client(secure[1], token=token) as bearer:
        assert bearer.get(f"/status/{alice_job}").status_code == 200


def test_a_revoked_key_and_its_tokens_are_refused_on_their_next_request(
    secure: tuple[Settings, str], keys: dict[str, str]
) -> None:
    settings, url = secure
    key = make_key(settings, "user", "to revoke")
    key_id = key.split("_")[1]
    with client(url, key) as user:
        assert user.get("/jobs").status_code == 200  # its check is now cached
        token = user.post("/auth/token").json()["access_token"]
    with client(url, keys["admin"]) as admin:
        revoked = admin.delete(f"/admin/keys/{key_id}")
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"]
        audit = admin.get("/admin/audit").json()
        assert {"action": "key.revoke", "target": key_id} in [
            {"action": entry["action"], "target": entry["target"]} for entry in audit
        ]
    with client(url, key) as user:
        answer = user.get("/jobs")
        assert answer.status_code == 401
        assert "revoked" in answer.json()["detail"]
    with client(url, token=token) as bearer:
        assert bearer.get("/jobs").status_code == 401


def test_keys_made_by_the_admin_api_work_at_once(secure: tuple[Settings, str], keys: dict[str, str]) -> None:
    with client(secure[1], keys["admin"]) as admin:
        made = admin.post("/admin/keys", json={"role": "user", "name": "from the API"})
    assert made.status_code == 201
    assert made.json()["key"].startswith("vq_")
    assert made.json()["role"] == "user"
    with client(secure[1], made.json()["key"]) as user:
        assert user.get("/models").status_code == 200
    with client(secure[1], keys["admin"]) as admin:
        listed = admin.get("/admin/keys").json()
    assert all("key" not in entry for entry in listed), "keys are shown once, never listed"


@pytest.fixture
def limited_pair(secure: tuple[Settings, str]) -> Iterator[tuple[ApiServer, ApiServer]]:
    """Two more API processes of the secure stack's service, with a limit of 5 requests a minute per key."""
    settings = secure[0].model_copy(update={"rate_limit_user": 5})
    servers = (ApiServer(settings), ApiServer(settings))
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


def test_the_rate_limit_holds_across_two_api_processes(
    secure: tuple[Settings, str], limited_pair: tuple[ApiServer, ApiServer]
) -> None:
    key = make_key(secure[0], "user", "rate limited")
    _start_of_a_window()
    answers = []
    for n in range(8):
        with client(limited_pair[n % 2].url, key) as user:
            answers.append(user.get("/jobs"))
    assert [answer.status_code for answer in answers] == [200] * 5 + [429] * 3
    assert [int(answer.headers["ratelimit-remaining"]) for answer in answers[:5]] == [4, 3, 2, 1, 0]
    refused = answers[5]
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-limit"] == "5"


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(secure: tuple[Settings, str], keys: dict[str, str]) -> None:
    untrusted = ApiServer(secure[0].model_copy(update={"rate_limit_ip": 3}))
    trusted = ApiServer(secure[0].model_copy(update={"rate_limit_ip": 3, "trusted_proxies": ["127.0.0.1/32"]}))
    for server in (untrusted, trusted):
        server.start()
    try:
        _start_of_a_window()
        with client(untrusted.url, keys["alice"]) as alice:
            spoofed = [alice.get("/jobs", headers={"X-Forwarded-For": f"203.0.113.{n}"}) for n in range(5)]
        assert [answer.status_code for answer in spoofed] == [200] * 3 + [429] * 2, "all one address: the peer's"

        with client(trusted.url, keys["alice"]) as alice:
            forwarded = [alice.get("/jobs", headers={"X-Forwarded-For": f"198.51.100.{n}"}) for n in range(5)]
        assert [answer.status_code for answer in forwarded] == [200] * 5, "five clients behind the proxy"
    finally:
        for server in (untrusted, trusted):
            server.stop()


def test_callbacks_to_loopback_and_metadata_addresses_are_refused_by_default(
    secure: tuple[Settings, str], keys: dict[str, str]
) -> None:
    settings = secure[0].model_copy(update={"callback_secret": "callback-secret-for-the-suite"})
    server = ApiServer(settings)
    server.start()
    try:
        with client(server.url, keys["alice"]) as alice:
            for target in ("http://127.0.0.1:9/hook", "http://169.254.169.254/latest/meta-data/", "http://[::1]/"):
                answer = submit(alice, CAT, callback_url=target)
                assert answer.status_code == 422, target
                assert "private, loopback or link-local" in answer.json()["detail"]
    finally:
        server.stop()


def ws_url(base: str, job_id: str, credential: str | None = None) -> str:
    url = base.replace("http://", "ws://") + f"/ws/{job_id}"
    return f"{url}?token={credential}" if credential else url


def _listed(api: httpx.Client, job_id: str) -> bool:
    jobs = api.get("/jobs", params={"limit": 100}).json()["jobs"]
    return any(job["job_id"] == job_id for job in jobs)


def _start_of_a_window() -> None:
    """Wait, when too little of this rate-limit window is left for a burst of requests, for the next one."""
    wait_for(
        lambda: WINDOW - time.time() % WINDOW >= BURST_ROOM,
        BURST_ROOM + 5,
        "a rate-limit window with room for a burst",
        interval=0.1,
    )


def admin_cli(url: str, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONQ_")}
    return subprocess.run(
        [sys.executable, "-m", "visionq", "admin", *args, "--url", url, "--api-key", key],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_admin_cli_speaks_for_admins_only(secure: tuple[Settings, str], keys: dict[str, str]) -> None:
    url = secure[1]
    queues = admin_cli(url, keys["admin"], "queues", "--json")
    assert queues.returncode == 0, queues.stderr
    assert set(json.loads(queues.stdout)["queue_depth"]) == {"low", "normal", "high", "urgent"}

    models = admin_cli(url, keys["admin"], "models", "--json")
    assert "efficientnet-lite0" in {model["name"] for model in json.loads(models.stdout)}
    with client(url, keys["admin"]) as admin:
        assert json.loads(admin_cli(url, keys["admin"], "dlq", "--json").stdout) == admin.get("/admin/dlq").json()
    workers = json.loads(admin_cli(url, keys["admin"], "workers", "--json").stdout)
    assert "visionq-test-secure" in {worker["queue"] for worker in workers}
    assert admin_cli(url, keys["admin"], "audit").returncode == 0

    refused = admin_cli(url, keys["alice"], "queues")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error[forbidden]: ")
