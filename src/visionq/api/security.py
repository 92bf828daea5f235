"""Authentication: the credentials of a request (API key or JWT) → its Principal; authorization checks.

With `auth=off` every request is the open principal. With `auth=required`, a request brings an API key
(`X-API-Key`) or an access token (`Authorization: Bearer`); a WebSocket, which a browser cannot give
headers, may bring either as `?token=`. API keys are checked against the database through a short Redis
cache that revocation clears, so a revoked key fails on its very next request; access tokens made from a
revoked key fail as soon as it is revoked too.

With `oidc_issuer` set, a bearer token whose `iss` is that identity provider is checked against the provider's
published keys instead (`auth.oidc`), and its subject acts as `oidc:<sub>`.
"""

from __future__ import annotations

import jwt
import orjson
from redis.asyncio import Redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from visionq import errors
from visionq.archive.repository import Archive
from visionq.auth import keys as api_keys
from visionq.auth.oidc import OidcVerifier
from visionq.auth.principals import OPEN, Principal, key_principal
from visionq.auth.tokens import InvalidToken, TokenIssuer
from visionq.jobs.credentials import Credentials
from visionq.settings import AuthMode, Settings
from visionq.wire.states import Role

#: Seconds an API key's check is cached in Redis (revocation clears it at once).
KEY_CACHE_TTL = 60
_REVOKED = b"revoked"
_HOW = "send an API key as `X-API-Key` or an access token as `Authorization: Bearer <token>`"


class Authenticator:
    def __init__(self, settings: Settings, redis: Redis, archive: Archive) -> None:
        self.required = settings.auth is AuthMode.REQUIRED
        self.credentials = Credentials(redis)
        self.archive = archive
        self.tokens = TokenIssuer(settings, redis) if self.required else None
        self.oidc = OidcVerifier(settings) if self.required and settings.oidc_issuer is not None else None

    async def aclose(self) -> None:
        if self.oidc is not None:
            await self.oidc.aclose()

    async def principal(self, connection: HTTPConnection) -> Principal:
        """Who the request acts for; raises Unauthorized (401) without valid credentials."""
        if not self.required:
            return OPEN
        authorization = connection.headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise errors.Unauthorized(f"the Authorization header must be `Bearer <token>`; {_HOW}")
            return await self.from_token(token.strip())
        key = connection.headers.get("x-api-key")
        if key is not None:
            return await self.from_key(key)
        if connection.scope["type"] == "websocket" and "token" in connection.query_params:
            credential = connection.query_params["token"]
            is_key = api_keys.key_id_of(credential) is not None
            return await (self.from_key(credential) if is_key else self.from_token(credential))
        raise errors.Unauthorized(f"this service requires authentication: {_HOW}")

    async def from_token(self, token: str) -> Principal:
        assert self.tokens is not None
        try:
            if self.oidc is not None and _unverified_issuer(token) == self.oidc.issuer:
                return await self.oidc.verify(token)
            principal = self.tokens.verify(token)
        except InvalidToken as exc:
            raise errors.Unauthorized(str(exc)) from exc
        if principal.key_id is not None and await self.credentials.is_revoked(principal.key_id):
            raise errors.Unauthorized("the API key this token was made from has been revoked")
        return principal

    async def from_key(self, key: str) -> Principal:
        """The principal of an API key, from the cache or the database; Unauthorized if unknown or revoked."""
        if api_keys.key_id_of(key) is None:
            raise errors.Unauthorized("the API key is malformed: keys read `vq_<id>_<secret>`")
        key_hash = api_keys.hash_key(key)
        cached = await self.credentials.cached_check(key_hash)
        if cached is None:
            info = await run_in_threadpool(api_keys.find_key, self.archive.engine, key)
            if info is None:
                raise errors.Unauthorized("unknown API key")
            cached = _REVOKED if not info.active else orjson.dumps({"key_id": info.key_id, "role": info.role.value})
            await self.credentials.cache_check(key_hash, cached, ttl=KEY_CACHE_TTL)
        if cached in (_REVOKED, _REVOKED.decode()):
            raise errors.Unauthorized("this API key has been revoked")
        entry = orjson.loads(cached)
        return key_principal(str(entry["key_id"]), Role(entry["role"]))


def _unverified_issuer(token: str) -> object:
    """The `iss` a token claims, unchecked: only to choose who checks it; None if it is not a JWT."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims.get("iss")


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise errors.Forbidden("this route needs the admin role")


def check_owner(principal: Principal, owner: str, job_id: str) -> None:
    """Another principal's job is not found (404), not forbidden: its existence is not for others to learn."""
    if not principal.may_see(owner):
        raise errors.JobNotFound(f"no job {job_id!r}: the id is unknown or its result has expired")
