"""Principal: who a request acts for, and the roles of RBAC."""

from __future__ import annotations

from dataclasses import dataclass

from visionq.jobs.records import ANONYMOUS
from visionq.wire.states import Role


@dataclass(frozen=True)
class Principal:
    """`id` owns the jobs this principal submits: `key:<key_id>` for an API key and the tokens made from
    it, `anonymous` while authentication is off (who then has every right)."""

    id: str
    role: Role
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def may_see(self, owner: str) -> bool:
        """Whether this principal may see a job owned by `owner`: its own, or any for an admin."""
        return self.is_admin or owner == self.id


OPEN = Principal(ANONYMOUS, Role.ADMIN)
"""The principal of every request while authentication is off."""


def key_principal(key_id: str, role: Role) -> Principal:
    return Principal(f"key:{key_id}", role, key_id)
