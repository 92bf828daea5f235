"""OpenID Connect: claims → roles, the settings it needs, /docs, and the verifier against an identity provider
made of `httpx.MockTransport` with a clock the test moves."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from jwt.utils import base64url_encode

from conftest import SettingsFactory
from signing_keys import PrivateKey, new_key, public_jwk
from visionq.api.app import create_app
from visionq.auth.oidc import REFETCH_INTERVAL, OidcVerifier, claim_values, discovery_url, role_of
from visionq.auth.principals import Principal
from visionq.auth.tokens import InvalidToken
from visionq.settings import Settings
from visionq.wire.states import Role

ISSUER = "https://idp.example.com/realms/main"
AUDIENCE = "visionq"
SECRET = "unit-test-secret-for-the-oidc-suite-0123"
JWKS_URI = "https://idp.example.com/keys"
OIDC = {"auth": "required", "auth_secret": SECRET, "oidc_issuer": ISSUER, "oidc_audience": AUDIENCE}


@cache
def private_key(name: str) -> PrivateKey:
    """A key per name, made once: RSA 2048 for names starting `rsa`, else EC P-256."""
    return new_key("RS256" if name.startswith("rsa") else "ES256")


def token(name: str, **claims: Any) -> str:
    """A token signed with key `name` (its kid), valid for ten minutes unless `claims` say otherwise."""
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 600} | claims
    algorithm = "RS256" if name.startswith("rsa") else "ES256"
    return jwt.encode(body, private_key(name), algorithm=algorithm, headers={"kid": name})


@dataclass
class Provider:
    """An identity provider that publishes the keys named in `published`; `up` false: it answers 503."""

    published: list[str] = field(default_factory=lambda: ["rsa-1", "ec-1"])
    up: bool = True
    jwks_requests: int = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            return httpx.Response(503)
        if str(request.url) == discovery_url(ISSUER):
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": JWKS_URI})
        if str(request.url) == JWKS_URI:
            self.jwks_requests += 1
            return httpx.Response(200, json={"keys": [public_jwk(name, private_key(name)) for name in self.published]})
        return httpx.Response(404)


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


Scenario = Callable[[OidcVerifier], Awaitable[None]]


def run(settings: Settings, provider: Provider, scenario: Scenario, clock: Clock | None = None) -> None:
    async def main() -> None:
        verifier = OidcVerifier(settings, transport=httpx.MockTransport(provider.handle), clock=clock or Clock())
        try:
            await scenario(verifier)
        finally:
            await verifier.aclose()

    asyncio.run(main())


async def refusal(verifier: OidcVerifier, credential: str) -> str:
    with pytest.raises(InvalidToken) as refused:
        await verifier.verify(credential)
    return str(refused.value)


# --- claims → roles -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "path", "values"),
    [
        pytest.param({"roles": ["admin", "user"]}, "roles", ["admin", "user"], id="list"),
        pytest.param(
            {"scope": "openid visionq:admin email"}, "scope", ["openid", "visionq:admin", "email"], id="scope"
        ),
        pytest.param({"realm_access": {"roles": ["user"]}}, "realm_access.roles", ["user"], id="keycloak-dotted"),
        pytest.param(
            {"https://visionq.example/roles": ["admin"]}, "https://visionq.example/roles", ["admin"], id="url"
        ),
        pytest.param({"realm_access": {}}, "realm_access.roles", [], id="missing-leaf"),
        pytest.param({"realm_access": ["user"]}, "realm_access.roles", [], id="not-an-object"),
        pytest.param({}, "roles", [], id="absent"),
        pytest.param({"roles": {"admin": True}}, "roles", [], id="object"),
        pytest.param({"roles": ["admin", 7, None]}, "roles", ["admin"], id="non-strings-dropped"),
    ],
)
def test_claim_values_read_lists_scope_strings_and_dotted_paths(
    claims: dict[str, Any], path: str, values: list[str]
) -> None:
    assert claim_values(claims, path) == values


@pytest.mark.parametrize(
    ("values", "admin_values", "user_values", "role"),
    [
        pytest.param(["admin"], ["admin"], [], Role.ADMIN, id="admin"),
        pytest.param(["user", "admin"], ["admin"], ["user"], Role.ADMIN, id="admin-wins"),
        pytest.param([], ["admin"], [], Role.USER, id="no-user-values-everyone-is-a-user"),
        pytest.param(["visionq"], ["admin"], ["visionq"], Role.USER, id="user-value"),
        pytest.param(["other"], ["admin"], ["visionq"], None, id="no-role"),
        pytest.param([], ["admin"], ["visionq"], None, id="no-values-no-role"),
    ],
)
def test_role_of_maps_claim_values(
    values: list[str], admin_values: list[str], user_values: list[str], role: Role | None
) -> None:
    assert role_of(values, admin_values, user_values) is role


# --- settings and /docs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"auth": "off", "auth_secret": None}, "VISIONQ_AUTH=required", id="auth-off"),
        pytest.param({"oidc_audience": None}, "VISIONQ_OIDC_AUDIENCE", id="no-audience"),
        pytest.param({"oidc_issuer": "idp.example.com"}, "issuer's URL", id="not-a-url"),
        pytest.param({"oidc_issuer": "https://visionq", "auth_issuer": "https://visionq"}, "differ", id="same"),
    ],
)
def test_unsafe_oidc_settings_are_refused(
    make_settings: SettingsFactory, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_settings(**(OIDC | overrides))


def test_the_docs_offer_the_identity_providers_sign_in(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings(**OIDC, oidc_client_id="visionq-docs"))
    document = app.openapi()
    scheme = document["components"]["securitySchemes"]["openIdConnect"]
    assert scheme == {"type": "openIdConnect", "openIdConnectUrl": f"{ISSUER}/.well-known/openid-configuration"}
    assert document["security"] == [{"openIdConnect": []}]
    assert app.openapi() is document, "built once"
    assert app.swagger_ui_init_oauth == {"clientId": "visionq-docs", "usePkceWithAuthorizationCodeGrant": True}


def test_without_an_issuer_the_docs_name_no_identity_provider(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings())
    assert "securitySchemes" not in app.openapi().get("components", {})
    assert app.swagger_ui_init_oauth is None


# --- the verifier ---------------------------------------------------------------------------------------------


def test_rs256_and_es256_tokens_give_their_subjects_principal(make_settings: SettingsFactory) -> None:
    async def scenario(verifier: OidcVerifier) -> None:
        assert await verifier.verify(token("rsa-1", roles=["admin"])) == Principal("oidc:alice", Role.ADMIN)
        assert await verifier.verify(token("ec-1", sub="bob")) == Principal("oidc:bob", Role.USER)

    run(make_settings(**OIDC), Provider(), scenario)


def test_keycloak_realm_roles_and_required_user_values(make_settings: SettingsFactory) -> None:
    settings = make_settings(**OIDC, oidc_role_claim="realm_access.roles", oidc_user_values=["visionq-user"])

    async def scenario(verifier: OidcVerifier) -> None:
        user = await verifier.verify(token("rsa-1", realm_access={"roles": ["visionq-user"]}))
        assert user.role is Role.USER
        assert "grants no visionq role" in await refusal(verifier, token("rsa-1", realm_access={"roles": ["x"]}))
        assert "grants no visionq role" in await refusal(verifier, token("rsa-1"))

    run(settings, Provider(), scenario)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda: token("rsa-1", aud="another-app"), "another audience", id="audience"),
        pytest.param(lambda: token("rsa-1", exp=int(time.time()) - 120), "expired", id="expired"),
        pytest.param(lambda: token("rsa-1", nbf=int(time.time()) + 600), "not valid yet", id="not-before"),
        pytest.param(lambda: token("rsa-1", sub=""), "subject", id="empty-subject"),
        pytest.param(lambda: token("rsa-unpublished"), "unknown `kid`", id="unknown-key"),
        pytest.param(
            lambda: jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x"}, "", "none"), "not 'none'", id="none"
        ),
        pytest.param(lambda: hs256_with_the_public_key(), "not 'HS256'", id="hmac-with-public-key"),
        pytest.param(lambda: tampered(token("rsa-1")), "bad signature", id="tampered"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(
    make_settings: SettingsFactory, make: Callable[[], str], reason: str
) -> None:
    async def scenario(verifier: OidcVerifier) -> None:
        assert reason in await refusal(verifier, make())

    run(make_settings(**OIDC), Provider(), scenario)


def hs256_with_the_public_key() -> str:
    """The algorithm-confusion attack: an HMAC keyed with the provider's (public) RSA key, made by hand since
    PyJWT refuses to make one."""
    public = private_key("rsa-1").public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 600}
    signing_input = b".".join(base64url_encode(json.dumps(part).encode()) for part in (header, claims))
    signature = hmac.new(pem, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64url_encode(signature)).decode()


def tampered(made: str) -> str:
    head, _, signature = made.rpartition(".")
    return f"{head}.{signature[:-4]}{'BBBB' if signature.endswith('AAAA') else 'AAAA'}"


def test_a_flood_of_unknown_keys_fetches_the_key_set_once_per_interval(make_settings: SettingsFactory) -> None:
    provider, clock = Provider(), Clock()

    async def scenario(verifier: OidcVerifier) -> None:
        await verifier.verify(token("rsa-1"))
        assert provider.jwks_requests == 1
        clock.now += REFETCH_INTERVAL
        flood = [token(f"rsa-1{n}") for n in range(3)] * 10
        for refused in await asyncio.gather(*(verifier.verify(made) for made in flood), return_exceptions=True):
            assert isinstance(refused, InvalidToken)
        assert provider.jwks_requests == 2, "one refetch for the whole flood"
        assert (await verifier.verify(token("ec-1"))).id == "oidc:alice", "known keys still work"

    run(make_settings(**OIDC), provider, scenario, clock)


def test_a_rotated_key_is_fetched_when_a_token_names_it(make_settings: SettingsFactory) -> None:
    provider, clock = Provider(published=["rsa-1"]), Clock()

    async def scenario(verifier: OidcVerifier) -> None:
        await verifier.verify(token("rsa-1"))
        provider.published = ["rsa-2"]
        clock.now += REFETCH_INTERVAL
        assert (await verifier.verify(token("rsa-2", sub="carol"))).id == "oidc:carol"
        assert provider.jwks_requests == 2

    run(make_settings(**OIDC), provider, scenario, clock)


def test_an_unreachable_provider_is_named_and_held_keys_outlive_it(make_settings: SettingsFactory) -> None:
    provider, clock = Provider(up=False), Clock()
    settings = make_settings(**OIDC)

    async def scenario(verifier: OidcVerifier) -> None:
        reason = await refusal(verifier, token("rsa-1"))
        assert f"identity provider {ISSUER} is unavailable" in reason
        assert "503" in reason
        provider.up = True
        assert "unavailable" in await refusal(verifier, token("rsa-1")), "no second try within the interval"
        clock.now += REFETCH_INTERVAL
        await verifier.verify(token("rsa-1"))
        provider.up = False
        clock.now += settings.oidc_jwks_ttl
        assert (await verifier.verify(token("rsa-1"))).id == "oidc:alice", "the held keys outlive an outage"

    run(settings, provider, scenario, clock)


def test_a_discovery_document_of_another_issuer_is_refused(make_settings: SettingsFactory) -> None:
    def impostor(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"issuer": "https://elsewhere.example.com", "jwks_uri": JWKS_URI})

    async def main() -> None:
        verifier = OidcVerifier(make_settings(**OIDC), transport=httpx.MockTransport(impostor))
        try:
            assert "names the issuer 'https://elsewhere.example.com'" in await refusal(verifier, token("rsa-1"))
        finally:
            await verifier.aclose()

    asyncio.run(main())
