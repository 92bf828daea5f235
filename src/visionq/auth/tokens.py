"""JWT access tokens (HS256, PyJWT) and opaque refresh tokens kept in Redis, rotated on every use."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass

import jwt
import orjson
from redis.asyncio import Redis

from visionq.auth.principals import Principal, key_principal
from visionq.jobs.credentials import Credentials
from visionq.settings import Settings
from visionq.wire.states import Role

ALGORITHM = "HS256"
#: Claims a token must carry to be accepted at all.
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "role", "kid"]


class InvalidToken(Exception):
    """Why a token was refused, in words fit for the 401's detail."""


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


class TokenIssuer:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        if settings.auth_secret is None:
            raise ValueError("tokens need VISIONQ_AUTH_SECRET")
        self.secret = settings.auth_secret.get_secret_value()
        self.issuer = settings.auth_issuer
        self.audience = settings.auth_audience
        self.access_ttl = settings.access_token_ttl
        self.refresh_ttl = settings.refresh_token_ttl
        self.credentials = Credentials(redis)

    async def issue(self, principal: Principal) -> TokenPair:
        """A new access token and a new refresh token for a key's principal."""
        assert principal.key_id is not None, "tokens are made from API keys"
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": principal.id,
            "kid": principal.key_id,
            "role": principal.role.value,
            "iat": now,
            "exp": now + self.access_ttl,
            "jti": uuid.uuid4().hex,
        }
        access = jwt.encode(claims, self.secret, algorithm=ALGORITHM)
        refresh = secrets.token_urlsafe(32)
        entry = orjson.dumps({"key_id": principal.key_id, "role": principal.role.value})
        await self.credentials.keep_refresh_token(refresh, entry, ttl=self.refresh_ttl)
        return TokenPair(access, refresh, self.access_ttl)

    def verify(self, token: str) -> Principal:
        """The principal of a valid access token; raises InvalidToken for a bad signature, an expired token,
        another issuer or audience, or missing claims."""
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("the access token has expired; get a new one from POST /auth/refresh") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("the access token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("the access token is from another issuer") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("the access token is not valid (bad signature or malformed)") from exc
        try:
            return key_principal(str(claims["kid"]), Role(claims["role"]))
        except ValueError as exc:
            raise InvalidToken("the access token names an unknown role") from exc

    async def redeem(self, refresh_token: str) -> tuple[str, Role] | None:
        """Use up a refresh token: its key id and role, or None if it is unknown, used or expired."""
        stored = await self.credentials.redeem_refresh_token(refresh_token)
        if stored is None:
            return None
        entry = orjson.loads(stored)
        return str(entry["key_id"]), Role(entry["role"])
