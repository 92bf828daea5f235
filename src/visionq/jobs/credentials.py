"""What authentication keeps in Redis: refresh tokens, each API key's check cached for a minute, and the keys
revoked while access tokens made from them may still be valid.

The rules (who may do what, how long a token lives) are the auth package's; this module only stores them.
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from visionq.jobs import keys


def _queue_forget(pipe: Any, *, key_hash: str, key_id: str, token_ttl: int) -> None:
    """What revoking a key takes, at once: its cached check dropped, and the access tokens made from it refused
    for as long as any can still be valid."""
    pipe.delete(keys.api_key_cache(key_hash))
    pipe.set(keys.revoked_key(key_id), b"1", ex=token_ttl)


def forget_key(redis: Redis, *, key_hash: str, key_id: str, token_ttl: int) -> None:
    """`Credentials.forget` for a blocking client (the `visionq keys revoke` command)."""
    with redis.pipeline(transaction=False) as pipe:  # two slots on a cluster; either change alone is safe
        _queue_forget(pipe, key_hash=key_hash, key_id=key_id, token_ttl=token_ttl)
        pipe.execute()


class Credentials:
    """The API's store of credentials' state."""

    def __init__(self, redis: AsyncRedis) -> None:
        self.redis = redis

    async def keep_refresh_token(self, token: str, entry: bytes, *, ttl: int) -> None:
        await self.redis.set(keys.refresh_token(token), entry, ex=ttl)

    async def redeem_refresh_token(self, token: str) -> bytes | str | None:
        """The entry of a refresh token, which is used up: None if it is unknown, used or expired."""
        entry: bytes | str | None = await self.redis.getdel(keys.refresh_token(token))
        return entry

    async def is_revoked(self, key_id: str) -> bool:
        return bool(await self.redis.exists(keys.revoked_key(key_id)))

    async def cached_check(self, key_hash: str) -> bytes | str | None:
        """The cached outcome of checking the key with this hash against the database, if fresh."""
        cached: bytes | str | None = await self.redis.get(keys.api_key_cache(key_hash))
        return cached

    async def cache_check(self, key_hash: str, outcome: bytes, *, ttl: int) -> None:
        await self.redis.set(keys.api_key_cache(key_hash), outcome, ex=ttl)

    async def forget(self, *, key_hash: str, key_id: str, token_ttl: int) -> None:
        """A key was revoked: see `_queue_forget`."""
        async with self.redis.pipeline(transaction=False) as pipe:  # see forget_key
            _queue_forget(pipe, key_hash=key_hash, key_id=key_id, token_ttl=token_ttl)
            await pipe.execute()
