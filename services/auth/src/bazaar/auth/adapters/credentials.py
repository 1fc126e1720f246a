"""SQL for service clients, refresh tokens and login throttling."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from uuid import UUID

import asyncpg

from bazaar.auth.domain.model import RefreshToken, ServiceClient
from bazaar.auth.domain.throttle import FAILURE_MEMORY
from bazaar.shared.db import rows_affected

SELECT_CLIENT = "SELECT client_id, secret_hash, scopes FROM service_client WHERE client_id = $1"

UPSERT_CLIENT = """
INSERT INTO service_client (client_id, secret_hash, scopes) VALUES ($1, $2, $3)
ON CONFLICT (client_id) DO UPDATE
SET secret_hash = EXCLUDED.secret_hash, scopes = EXCLUDED.scopes, updated_at = now()
WHERE service_client.secret_hash <> EXCLUDED.secret_hash
   OR service_client.scopes <> EXCLUDED.scopes
"""

DELETE_OTHER_CLIENTS = "DELETE FROM service_client WHERE NOT (client_id = ANY($1::text[]))"

INSERT_REFRESH = """
INSERT INTO refresh_token (id, token_hash, family_id, user_id, client_id, scope, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, now() + $7::interval)
"""

_REFRESH_COLUMNS = "id, family_id, user_id, client_id, scope, expires_at, used_at, revoked_at"

SELECT_REFRESH = f"SELECT {_REFRESH_COLUMNS} FROM refresh_token WHERE token_hash = $1"

SELECT_REFRESH_FOR_UPDATE = SELECT_REFRESH + " FOR UPDATE"

# Everything that changes a family (a refresh adding a successor, a revocation) holds this
# lock first: a revocation then always sees every successor, even one being issued.
# Two-key form, namespace 0x62617a66 ("bazf"), so it cannot meet the key-ring's lock.
LOCK_FAMILY = "SELECT pg_advisory_xact_lock(1650555494, hashtext($1::uuid::text))"

MARK_REFRESH_USED = "UPDATE refresh_token SET used_at = now() WHERE id = $1"

REVOKE_FAMILY = """
UPDATE refresh_token SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL
"""

# Every checked attempt counts until one succeeds; attempts older than the memory window
# start the count again. Attempts refused by a block are not counted, so hammering a
# blocked account cannot lengthen its block. RETURNING tells whether a block was on.
RECORD_ATTEMPT = """
INSERT INTO login_throttle AS t (email_key, failures, last_failed_at) VALUES ($1, 1, now())
ON CONFLICT (email_key) DO UPDATE
SET failures = CASE WHEN t.blocked_until > now() THEN t.failures
                    WHEN t.last_failed_at < now() - $2::interval THEN 1
                    ELSE t.failures + 1 END,
    last_failed_at = CASE WHEN t.blocked_until > now() THEN t.last_failed_at ELSE now() END
RETURNING failures, coalesce(blocked_until > now(), false) AS blocked
"""

BLOCK_FOR = "UPDATE login_throttle SET blocked_until = now() + $2::interval WHERE email_key = $1"

# Rows nobody needs any more: failures past the memory window and no block running.
PURGE_THROTTLE = """
DELETE FROM login_throttle
WHERE last_failed_at < now() - $1::interval AND coalesce(blocked_until < now(), true)
"""

# Expired a while ago (the margin keeps a just-expired family's revocation visible).
PURGE_REFRESH = "DELETE FROM refresh_token WHERE expires_at < now() - $1::interval"

CLEAR_FAILURES = "DELETE FROM login_throttle WHERE email_key = $1"


class ClientRepository:
    """Service clients."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def get(self, client_id: str) -> ServiceClient | None:
        """The client with this id."""
        row = await self.conn.fetchrow(SELECT_CLIENT, client_id)
        if row is None:
            return None
        return ServiceClient(row["client_id"], row["secret_hash"], frozenset(row["scopes"]))

    async def put(self, client_id: str, secret_hash: str, scopes: Iterable[str]) -> None:
        """Create the client, or bring its secret and scopes in line with the settings."""
        await self.conn.execute(UPSERT_CLIENT, client_id, secret_hash, sorted(scopes))

    async def remove_all_but(self, client_ids: Iterable[str]) -> None:
        """Delete every client not named (the settings are the list of clients)."""
        await self.conn.execute(DELETE_OTHER_CLIENTS, list(client_ids))


class RefreshTokenRepository:
    """Refresh tokens, stored only as digests."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def add(
        self,
        token_id: UUID,
        digest: bytes,
        *,
        family_id: UUID,
        user_id: UUID,
        client_id: str,
        scope: str,
        lifetime: timedelta,
    ) -> None:
        """Store a new token of a family."""
        await self.conn.execute(
            INSERT_REFRESH, token_id, digest, family_id, user_id, client_id, scope, lifetime
        )

    async def find(self, digest: bytes) -> RefreshToken | None:
        """The token with this digest, without locking it."""
        row = await self.conn.fetchrow(SELECT_REFRESH, digest)
        return RefreshToken(**dict(row)) if row else None

    async def lock_family(self, family_id: UUID) -> None:
        """Hold the family's lock until the transaction ends (take it before any row lock)."""
        await self.conn.execute(LOCK_FAMILY, family_id)

    async def get_for_update(self, digest: bytes) -> RefreshToken | None:
        """The token with this digest, locked so two uses of it are serialised."""
        row = await self.conn.fetchrow(SELECT_REFRESH_FOR_UPDATE, digest)
        return RefreshToken(**dict(row)) if row else None

    async def mark_used(self, token_id: UUID) -> None:
        """Spend a token (it was exchanged for its successor)."""
        await self.conn.execute(MARK_REFRESH_USED, token_id)

    async def revoke_family(self, family_id: UUID) -> None:
        """Revoke every token of a family, the newest included."""
        await self.conn.execute(REVOKE_FAMILY, family_id)

    async def purge_expired(self, margin: timedelta) -> int:
        """Delete tokens expired more than `margin` ago; return how many."""
        status: str = await self.conn.execute(PURGE_REFRESH, margin)
        return rows_affected(status)


class LoginThrottle:
    """Login attempts per account since its last success (known or not: it cannot tell)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def record_attempt(self, email_key: str) -> tuple[int, bool]:
        """Count one more attempt; return the attempts so far and whether a block was on."""
        row = await self.conn.fetchrow(RECORD_ATTEMPT, email_key, FAILURE_MEMORY)
        return int(row["failures"]), bool(row["blocked"])

    async def block(self, email_key: str, wait: timedelta) -> None:
        """Refuse logins of this account for `wait` from now."""
        await self.conn.execute(BLOCK_FOR, email_key, wait)

    async def clear(self, email_key: str) -> None:
        """Forget the failures (after a successful login)."""
        await self.conn.execute(CLEAR_FAILURES, email_key)

    async def purge(self) -> int:
        """Delete rows of accounts with no recent failure and no block; return how many."""
        status: str = await self.conn.execute(PURGE_THROTTLE, FAILURE_MEMORY)
        return rows_affected(status)
