"""OpenID Connect end to end: a local identity provider (an HTTP server in a thread publishing a discovery
document and a key set of RSA and EC keys made here) and a visionq stack with auth=required that trusts it.

Its tokens act for `oidc:<sub>` with the role of their `roles` claim, beside the service's own API keys and
tokens; a rotated key is picked up when a token names it; bad tokens are 401 problems.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from websockets.sync.client import connect

from factories import cat_variants
from integration.conftest import StackFactory
from integration.stack import submit, wait_for, wait_terminal
from signing_keys import PrivateKey, new_key, public_jwk
from visionq.settings import Settings

SECRET = "o" * 16 + "-oidc-suite-secret-0123456789abcdef"
AUDIENCE = "visionq-oidc-suite"
CAT = cat_variants()["jpeg"]
JWKS_PATH = "/protocol/openid-connect/certs"
#: Seconds a token signed with a newly rotated key may take to be accepted: the service fetches the key set
#: again at most once every few seconds (auth.oidc.REFETCH_INTERVAL), and may just have done so.
ROTATION_TIMEOUT = 30.0


class IdentityProvider:
    """Discovery and JWKS on a free loopback port, served from a thread. It signs with one RSA and one EC key;
    `rotate()` replaces the RSA key with a new one under a new kid, as a provider's key rotation does."""

    def __init__(self) -> None:
        self.signing: dict[str, tuple[str, PrivateKey]] = {
            "RS256": ("rsa-1", new_key("RS256")),
            "ES256": ("ec-1", new_key("ES256")),
        }
        self.rotations = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-idp", daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                documents = {
                    "/.well-known/openid-configuration": {
                        "issuer": provider.issuer,
                        "jwks_uri": f"{provider.issuer}{JWKS_PATH}",
                    },
                    JWKS_PATH: {"keys": [public_jwk(kid, key) for kid, key in provider.signing.values()]},
                }
                document = documents.get(self.path)
                body = json.dumps(document).encode()
                self.send_response(200 if document is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test's output is the service's."""

        return Handler

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def rotate(self) -> None:
        self.rotations += 1
        self.signing = {**self.signing, "RS256": (f"rsa-rotated-{self.rotations}", new_key("RS256"))}

    def token(self, subject: str, algorithm: str = "RS256", **claims: Any) -> str:
        """A token of this provider for `subject`, valid for ten minutes unless `claims` say otherwise."""
        kid, key = self.signing[algorithm]
        return sign(self.claims(subject) | claims, key, algorithm, kid)

    def claims(self, subject: str) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": self.issuer, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + 600}


def sign(claims: dict[str, Any], key: PrivateKey, algorithm: str, kid: str) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def oidc(start_stack: StackFactory, idp: IdentityProvider) -> tuple[Settings, str]:
    settings, _, server = start_stack(
        "oidc",
        worker_pool="solo",
        auth="required",
        auth_secret=SECRET,
        oidc_issuer=idp.issuer,
        oidc_audience=AUDIENCE,
        rate_limit_user=1000,  # test stacks turn rate limits off; each subject's own is tested here
    )
    return settings, server.url


def client(url: str, token: str | None = None, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if key:
        headers["X-API-Key"] = key
    return httpx.Client(base_url=url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def alice_job(oidc: tuple[Settings, str], idp: IdentityProvider) -> str:
    with client(oidc[1], idp.token("alice")) as alice:
        accepted = submit(alice, CAT)
        assert accepted.status_code == 202, accepted.text
        job_id: str = accepted.json()["job_id"]
        assert wait_terminal(alice, job_id)["status"] == "completed"
    return job_id


def test_a_providers_rs256_token_submits_and_follows_its_job(
    oidc: tuple[Settings, str], idp: IdentityProvider, alice_job: str
) -> None:
    with client(oidc[1], idp.token("alice")) as alice:
        status = alice.get(f"/status/{alice_job}")
        result = alice.get(f"/result/{alice_job}")
    assert status.status_code == 200
    assert status.json()["status"] == "completed"
    assert result.status_code == 200


def test_an_es256_token_is_accepted(oidc: tuple[Settings, str], idp: IdentityProvider) -> None:
    credential = idp.token("erin", algorithm="ES256")
    assert jwt.get_unverified_header(credential)["alg"] == "ES256"
    with client(oidc[1], credential) as erin:
        assert erin.get("/models").status_code == 200


def test_the_roles_claim_gives_the_role(oidc: tuple[Settings, str], idp: IdentityProvider) -> None:
    with client(oidc[1], idp.token("root", roles=["admin"])) as admin:
        assert admin.get("/admin/queues").status_code == 200
    with client(oidc[1], idp.token("alice", roles=["viewer"])) as user:
        refused = user.get("/admin/queues")
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"


def test_another_subjects_job_is_404_and_its_owner_and_an_admin_see_it(
    oidc: tuple[Settings, str], idp: IdentityProvider, alice_job: str
) -> None:
    with client(oidc[1], idp.token("bob")) as bob:
        for path in (f"/status/{alice_job}", f"/result/{alice_job}"):
            answer = bob.get(path)
            assert answer.status_code == 404, path
            assert answer.json()["code"] == "not_found"
    with client(oidc[1], idp.token("alice")) as alice:
        assert alice.get(f"/status/{alice_job}").status_code == 200
    with client(oidc[1], idp.token("root", roles=["admin"])) as admin:
        assert admin.get(f"/status/{alice_job}").status_code == 200


def test_the_owner_follows_its_job_over_the_websocket_with_a_providers_token(
    oidc: tuple[Settings, str], idp: IdentityProvider, alice_job: str
) -> None:
    url = oidc[1].replace("http://", "ws://") + f"/ws/{alice_job}?token={idp.token('alice')}"
    with connect(url) as ws:
        assert '"status":"completed"' in str(ws.recv(timeout=10)).replace(" ", "")


def test_a_token_signed_with_a_rotated_key_is_accepted(oidc: tuple[Settings, str], idp: IdentityProvider) -> None:
    with client(oidc[1], idp.token("alice")) as before:
        assert before.get("/models").status_code == 200, "the service holds the provider's keys"
    idp.rotate()
    with client(oidc[1], idp.token("alice")) as after:
        wait_for(
            lambda: after.get("/models").status_code == 200,
            ROTATION_TIMEOUT,
            "a token signed with the rotated key to be accepted",
            interval=0.2,
        )


def _expired(idp: IdentityProvider) -> str:
    return idp.token("alice", exp=int(time.time()) - 300)


def _not_yet_valid(idp: IdentityProvider) -> str:
    return idp.token("alice", nbf=int(time.time()) + 600)


def _unknown_key(idp: IdentityProvider) -> str:
    return sign(idp.claims("mallory"), new_key("RS256"), "RS256", "never-published")


def _unsigned(idp: IdentityProvider) -> str:
    return jwt.encode(idp.claims("mallory") | {"roles": ["admin"]}, "", algorithm="none")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda idp: idp.token("alice", aud="another-app"), "another audience", id="wrong-audience"),
        pytest.param(_expired, "expired", id="expired"),
        pytest.param(_not_yet_valid, "not valid yet", id="not-yet-valid"),
        pytest.param(_unknown_key, "unknown `kid`", id="unknown-key"),
        pytest.param(_unsigned, "not 'none'", id="alg-none"),
        pytest.param(lambda idp: idp.token("alice", iss="http://127.0.0.1:9"), "not valid", id="wrong-issuer"),
    ],
)
def test_bad_provider_tokens_are_401_problems(
    oidc: tuple[Settings, str], idp: IdentityProvider, make: Callable[[IdentityProvider], str], reason: str
) -> None:
    with client(oidc[1], make(idp)) as bearer:
        answer = bearer.get("/models")
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "unauthorized"
    assert reason in answer.json()["detail"]


def test_own_api_keys_and_tokens_work_beside_the_provider(oidc: tuple[Settings, str], idp: IdentityProvider) -> None:
    with client(oidc[1], idp.token("root", roles=["admin"])) as admin:
        made = admin.post("/admin/keys", json={"role": "user", "name": "beside oidc"})
    assert made.status_code == 201, made.text
    with client(oidc[1], key=made.json()["key"]) as keyed:
        assert keyed.get("/models").status_code == 200
        issued = keyed.post("/auth/token")
    assert issued.status_code == 200
    with client(oidc[1], issued.json()["access_token"]) as bearer:
        assert bearer.get("/models").status_code == 200


def test_each_subject_has_its_own_rate_limit(oidc: tuple[Settings, str], idp: IdentityProvider) -> None:
    settings, url = oidc
    with client(url, idp.token("carol")) as carol, client(url, idp.token("dave")) as dave:
        first, second, other = carol.get("/models"), carol.get("/models"), dave.get("/models")

    assert first.status_code == second.status_code == other.status_code == 200
    assert first.headers["RateLimit-Limit"] == str(settings.rate_limit_user)
    assert int(second.headers["RateLimit-Remaining"]) == int(first.headers["RateLimit-Remaining"]) - 1
    assert other.headers["RateLimit-Remaining"] == str(settings.rate_limit_user - 1), "dave's count is his own"
