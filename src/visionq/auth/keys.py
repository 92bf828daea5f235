"""API keys: made and shown once, kept only as a SHA-256, revocable; stored in the archive database.

A key reads `vq_<key_id>_<secret>`. The key id is public (it names the key in lists, logs and job owners);
the secret part carries 256 random bits, so a plain SHA-256 is a safe digest (no slow hash is needed for
keys nobody chose).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from visionq.archive.tables import ApiKey
from visionq.jobs.records import utcnow
from visionq.wire.states import Role

KEY_PREFIX = "vq_"


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None
    key_hash: str

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    """The key id a well-formed key carries; None for anything else."""
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, _, secret = key.removeprefix(KEY_PREFIX).partition("_")
    return key_id if key_id and secret else None


def create_key(engine: Engine, role: Role, name: str) -> tuple[str, KeyInfo]:
    """Make a key; returns it (to show once) and what is stored about it."""
    key_id = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    row = ApiKey(key_id=key_id, key_hash=hash_key(key), name=name, role=role.value, created_at=utcnow())
    with Session(engine, expire_on_commit=False) as session, session.begin():
        session.add(row)
    return key, _info(row)


def find_key(engine: Engine, key: str) -> KeyInfo | None:
    """The key's record if `key` is one this service made (revoked or not), else None."""
    with Session(engine) as session:
        row = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key))).one_or_none()
        return _info(row) if row is not None else None


def get_key(engine: Engine, key_id: str) -> KeyInfo | None:
    with Session(engine) as session:
        row = session.get(ApiKey, key_id)
        return _info(row) if row is not None else None


def list_keys(engine: Engine) -> list[KeyInfo]:
    with Session(engine) as session:
        return [_info(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.created_at))]


def revoke_key(engine: Engine, key_id: str) -> KeyInfo | None:
    """Revoke the key (once; revoking again changes nothing); None if there is no such key."""
    with Session(engine) as session, session.begin():
        session.execute(
            update(ApiKey).where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow())
        )
    return get_key(engine, key_id)


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.key_id, row.name, Role(row.role), row.created_at, row.revoked_at, row.key_hash)
