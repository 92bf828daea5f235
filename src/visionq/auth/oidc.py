"""OpenID Connect resource server: the bearer JWTs of an external identity provider → a Principal.

The provider's discovery document (`<issuer>/.well-known/openid-configuration`) names its key set (`jwks_uri`).
Both are fetched with httpx's async client, on the event loop without blocking it, and the keys are kept for
`oidc_jwks_ttl` seconds. A token signed by a key the cache lacks makes the verifier fetch the set again (the
provider rotated its keys), but at most once every `REFETCH_INTERVAL` seconds, so that a flood of tokens with
made-up key ids cannot hammer the provider. When a fetch fails, the keys already held keep working.

Only asymmetric signatures (`ALGORITHMS`) are accepted: never `none`, and never an HMAC, whose "secret" would be
the provider's public key. The caller's role comes from one claim (`oidc_role_claim`), its id from `sub`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import jwt

from visionq.auth.principals import Principal
from visionq.auth.tokens import InvalidToken
from visionq.settings import Settings
from visionq.wire.states import Role

log = logging.getLogger(__name__)

#: Signature algorithms accepted from the identity provider.
ALGORITHMS = ("RS256", "ES256")
#: Claims a token of the identity provider must carry to be accepted at all.
REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]
#: Seconds of clock difference allowed between the identity provider and this service (`exp`, `nbf`, `iat`).
LEEWAY = 30
#: Least seconds between two fetches of the key set, whatever prompts them (unknown key ids, failures).
REFETCH_INTERVAL = 5.0
#: Seconds one request to the identity provider may take.
FETCH_TIMEOUT = 5.0
DISCOVERY_PATH = "/.well-known/openid-configuration"
#: Prefix of the principal ids of the identity provider's subjects (the owners of their jobs).
PRINCIPAL_PREFIX = "oidc:"
#: Longest principal id the archive can hold (its owner and audit columns are 200 characters).
MAX_PRINCIPAL_ID = 200


class ProviderUnavailable(Exception):
    """The identity provider's discovery document or key set could not be fetched or read."""


def discovery_url(issuer: str) -> str:
    """Where the issuer's discovery document is (OpenID Connect Discovery §4: the path follows the issuer's)."""
    return issuer.rstrip("/") + DISCOVERY_PATH


def claim_values(claims: Mapping[str, Any], path: str) -> list[str]:
    """The strings of the claim at `path`: named as a whole (`roles`, `https://example.com/roles`), else a dotted
    path into nested objects (`realm_access.roles`). A list gives its strings, a string its space-separated words
    (`scope`); a missing claim or another shape gives none."""
    node: Any
    if path in claims:
        node = claims[path]
    else:
        node = claims
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return []
            node = node[part]
    if isinstance(node, str):
        return node.split()
    if isinstance(node, list):
        return [value for value in node if isinstance(value, str)]
    return []


def role_of(values: Sequence[str], admin_values: Sequence[str], user_values: Sequence[str]) -> Role | None:
    """`admin` if any value is an admin value; `user` if any is a user value, or if no user values are
    configured (every valid token is a user); otherwise None: the token grants no role here."""
    if any(value in admin_values for value in values):
        return Role.ADMIN
    if not user_values or any(value in user_values for value in values):
        return Role.USER
    return None


class OidcVerifier:
    """Verifies the access tokens of the configured identity provider and maps them to principals.

        verifier = OidcVerifier(settings)
        principal = await verifier.verify(token)  # raises InvalidToken, with the reason for the 401
        await verifier.aclose()

    `transport` and `clock` stand in for the network and `time.monotonic` in tests.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.oidc_issuer is None or settings.oidc_audience is None:
            raise ValueError("OpenID Connect needs VISIONQ_OIDC_ISSUER and VISIONQ_OIDC_AUDIENCE")
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.role_claim = settings.oidc_role_claim
        self.admin_values = tuple(settings.oidc_admin_values)
        self.user_values = tuple(settings.oidc_user_values)
        self.ttl = settings.oidc_jwks_ttl
        self.client = httpx.AsyncClient(transport=transport, timeout=FETCH_TIMEOUT)
        self.clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._jwks_uri: str | None = None
        self._fresh_until = float("-inf")
        self._last_try: float | None = None
        self._last_failure: str | None = None
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token of the identity provider; raises InvalidToken otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("the bearer token is malformed") from exc
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise InvalidToken(
                f"the identity provider's tokens must be signed with {' or '.join(ALGORITHMS)}, not {algorithm!r}"
            )
        key = await self._key(header.get("kid"))
        return self._principal(self._decode(token, key))

    async def _key(self, kid: object) -> jwt.PyJWK:
        key = self._find(kid)
        # Past the TTL the keys are fetched again, but kept if that fails: a provider's outage is no reason to
        # refuse the tokens it signed before.
        if (key is None or self.clock() >= self._fresh_until) and self._may_fetch():
            await self._refresh()
            key = self._find(kid)
        if key is not None:
            return key
        if self._last_failure is not None:
            raise InvalidToken(
                f"the token cannot be checked: the identity provider {self.issuer} is unavailable "
                f"({self._last_failure}); try again later"
            )
        raise InvalidToken("the token is signed by a key the identity provider does not publish (unknown `kid`)")

    def _find(self, kid: object) -> jwt.PyJWK | None:
        if isinstance(kid, str):
            return self._keys.get(kid)
        # A token without a key id can only mean the one key of a provider that publishes one.
        return next(iter(self._keys.values())) if kid is None and len(self._keys) == 1 else None

    def _may_fetch(self) -> bool:
        return self._last_try is None or self.clock() - self._last_try >= REFETCH_INTERVAL

    async def _refresh(self) -> None:
        async with self._lock:
            if not self._may_fetch():  # another request fetched while this one waited
                return
            self._last_try = self.clock()
            try:
                self._keys = await self._fetch_keys()
            except ProviderUnavailable as exc:
                self._last_failure = str(exc)
                held = f"; keeping the {len(self._keys)} keys held" if self._keys else ""
                log.warning(
                    "could not fetch the signing keys of the identity provider %s: %s%s", self.issuer, exc, held
                )
                return
            self._last_failure = None
            self._fresh_until = self.clock() + self.ttl

    async def _fetch_keys(self) -> dict[str, jwt.PyJWK]:
        if self._jwks_uri is None:
            discovery = await self._get_json(discovery_url(self.issuer))
            if discovery.get("issuer") != self.issuer:
                raise ProviderUnavailable(
                    f"its discovery document names the issuer {discovery.get('issuer')!r}, not {self.issuer!r}: "
                    "set VISIONQ_OIDC_ISSUER to exactly the `iss` of its tokens"
                )
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise ProviderUnavailable("its discovery document has no `jwks_uri`")
            self._jwks_uri = jwks_uri
        document = await self._get_json(self._jwks_uri)
        try:
            keyset = jwt.PyJWKSet.from_dict(document)
        except jwt.PyJWTError as exc:
            raise ProviderUnavailable(f"its key set at {self._jwks_uri} holds no usable key ({exc})") from exc
        keys = {
            key.key_id: key
            for key in keyset
            if key.key_id is not None and key.algorithm_name in ALGORITHMS and key.public_key_use in (None, "sig")
        }
        if not keys:
            raise ProviderUnavailable(f"its key set at {self._jwks_uri} holds no {' or '.join(ALGORITHMS)} key")
        return keys

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self.client.get(url)
            response.raise_for_status()
            document = response.json()
        except httpx.HTTPStatusError as exc:
            raise ProviderUnavailable(f"GET {url} answered {exc.response.status_code}") from exc
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"GET {url} failed: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:
            raise ProviderUnavailable(f"GET {url} did not answer JSON") from exc
        if not isinstance(document, dict):
            raise ProviderUnavailable(f"GET {url} did not answer a JSON object")
        return document

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("the identity provider's token has expired; sign in again for a new one") from exc
        except jwt.ImmatureSignatureError as exc:
            raise InvalidToken("the identity provider's token is not valid yet (`nbf` or `iat` ahead)") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken(f"the token is for another audience: this service is {self.audience!r}") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token lacks the `{exc.claim}` claim") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("the token is not valid (bad signature or malformed)") from exc
        return claims

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        role = role_of(claim_values(claims, self.role_claim), self.admin_values, self.user_values)
        if role is None:
            granting = ", ".join(repr(value) for value in (*self.user_values, *self.admin_values))
            raise InvalidToken(
                f"the token grants no visionq role: its `{self.role_claim}` claim holds none of {granting}"
            )
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("the token's subject (`sub`) is empty or not a string")
        principal_id = f"{PRINCIPAL_PREFIX}{subject}"
        if len(principal_id) > MAX_PRINCIPAL_ID:
            raise InvalidToken(
                f"the token's subject (`sub`) is longer than {MAX_PRINCIPAL_ID - len(PRINCIPAL_PREFIX)} characters"
            )
        return Principal(principal_id, role)
