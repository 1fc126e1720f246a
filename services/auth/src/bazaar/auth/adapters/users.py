"""SQL for user accounts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from bazaar.auth.domain.errors import EmailTaken
from bazaar.auth.domain.model import NewUser, User

_COLUMNS = "id, email, name, roles, password_hash, created_at, updated_at"

INSERT_USER = f"""
INSERT INTO user_account (id, email, name, roles, password_hash)
VALUES ($1, $2, $3, $4, $5)
RETURNING {_COLUMNS}
"""

SELECT_USER = f"SELECT {_COLUMNS} FROM user_account WHERE id = $1"

SELECT_USER_BY_EMAIL = f"SELECT {_COLUMNS} FROM user_account WHERE lower(email) = lower($1)"

# $1/$2 cursor (created_at, id), $3 limit
LIST_USERS = f"""
SELECT {_COLUMNS} FROM user_account
WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1::timestamptz, $2::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $3
"""

UPDATE_ROLES = f"""
UPDATE user_account SET roles = $2, updated_at = now() WHERE id = $1 RETURNING {_COLUMNS}
"""

UPDATE_PASSWORD_HASH = "UPDATE user_account SET password_hash = $2 WHERE id = $1"  # noqa: S105 - a statement's name, no password


def _user(row: asyncpg.Record) -> User:
    return User(**{**dict(row), "roles": tuple(row["roles"])})


class UserRepository:
    """User accounts in PostgreSQL, through one connection of the caller's transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def add(self, user_id: UUID, new: NewUser, password_hash: str) -> User:
        """Insert a user; an email already used (in any case) raises EmailTaken."""
        try:
            row = await self.conn.fetchrow(
                INSERT_USER, user_id, new.email, new.name, list(new.roles), password_hash
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "user_account_email_key":
                raise EmailTaken("An account with this email already exists.") from exc
            raise
        return _user(row)

    async def get(self, user_id: UUID) -> User | None:
        """The user with this id."""
        row = await self.conn.fetchrow(SELECT_USER, user_id)
        return _user(row) if row else None

    async def get_by_email(self, email: str) -> User | None:
        """The user with this email, whatever its case."""
        row = await self.conn.fetchrow(SELECT_USER_BY_EMAIL, email)
        return _user(row) if row else None

    async def list(self, *, limit: int, after: tuple[datetime, UUID] | None) -> list[User]:
        """Users newest first, strictly after the keyset position `after`."""
        rows = await self.conn.fetch(
            LIST_USERS, after[0] if after else None, after[1] if after else None, limit
        )
        return [_user(r) for r in rows]

    async def set_roles(self, user_id: UUID, roles: Sequence[str]) -> User | None:
        """Replace a user's roles; None if there is no such user."""
        row = await self.conn.fetchrow(UPDATE_ROLES, user_id, list(roles))
        return _user(row) if row else None

    async def set_password_hash(self, user_id: UUID, password_hash: str) -> None:
        """Store a new hash of the same password (after a parameter change)."""
        await self.conn.execute(UPDATE_PASSWORD_HASH, user_id, password_hash)
