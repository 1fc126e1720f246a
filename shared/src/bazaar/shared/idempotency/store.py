"""The idempotency store: claim a key, run the operation, store its answer in the same commit.

Stripe semantics (see DESIGN.md, "Idempotency"):

1. Claim. An `INSERT ... ON CONFLICT ON CONSTRAINT idempotency_key_scope_key DO NOTHING`
   commits on its own, so concurrent requests with the same key see the claim at once. When
   the key is taken: an expired row is deleted and claimed again; another fingerprint is
   `IdempotencyKeyMismatch`; a completed row is replayed; a row in flight is
   `IdempotencyKeyInUse`, unless its `locked_at` is older than the in-flight timeout (a
   crashed worker), in which case it is taken over with a compare-and-set on `locked_at`.
2. Execute. The operation runs inside one transaction, and the row is marked completed in
   THAT transaction (guarded by id and the `locked_at` we hold): the effect and the stored
   answer commit together or not at all.
3. Failure. The business transaction rolls back; `store_error` may turn the exception into
   an answer to keep (a 4xx the client should see again), otherwise the claim is deleted so
   the client may retry. Cancellation releases the claim. The exception always propagates.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

import asyncpg

from bazaar.shared.db import Database, rows_affected
from bazaar.shared.idempotency.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyMismatch,
    validate_idempotency_key,
)
from bazaar.shared.idempotency.models import IdempotencyScope, Outcome, StoredResponse
from bazaar.shared.idempotency.schema import (
    CLAIM_SQL,
    COMPLETE_SQL,
    DELETE_EXPIRED_SQL,
    PURGE_EXPIRED_SQL,
    READ_SQL,
    RELEASE_SQL,
    TAKE_OVER_SQL,
)

logger = logging.getLogger(__name__)

Operation = Callable[[asyncpg.Connection], Awaitable[StoredResponse]]
#: Work done after the key is claimed and before the answering transaction opens (a remote
#: call, say), so no connection is held while it waits. A takeover runs it again: it must be
#: idempotent itself.
Prepare = Callable[[], Awaitable[None]]
StoreError = Callable[[Exception], StoredResponse | None]

DEFAULT_RETENTION = timedelta(hours=24)
DEFAULT_IN_FLIGHT_TIMEOUT = timedelta(seconds=60)


def _store_nothing(_exc: Exception) -> StoredResponse | None:
    return None


@dataclass(frozen=True, slots=True)
class _Claim:
    """A key we hold: its row id and the `locked_at` that proves it is still ours."""

    id: uuid.UUID
    locked_at: datetime


def _json_default(value: Any) -> Any:
    """Encode the values API bodies commonly hold; anything else is a bug of the caller."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def _stored_response(row: Mapping[str, Any]) -> StoredResponse:
    body, headers = row["response_body"], row["response_headers"]
    return StoredResponse(
        status=int(row["response_status"]),
        body=None if body is None else json.loads(body),
        headers={} if headers is None else dict(json.loads(headers)),
    )


class IdempotencyStore:
    """Runs operations at most once per idempotency key and replays their stored answers."""

    def __init__(
        self,
        db: Database,
        *,
        retention: timedelta = DEFAULT_RETENTION,
        in_flight_timeout: timedelta = DEFAULT_IN_FLIGHT_TIMEOUT,
        max_claim_attempts: int = 5,
    ) -> None:
        self._db = db
        self.retention = retention
        self.in_flight_timeout = in_flight_timeout
        self._max_claim_attempts = max_claim_attempts
        self._cleanups: set[asyncio.Task[None]] = set()

    async def run(
        self,
        *,
        key: str,
        scope: IdempotencyScope,
        fingerprint: str,
        operation: Operation,
        store_error: StoreError = _store_nothing,
        prepare: Prepare | None = None,
    ) -> Outcome:
        """Run `operation` once for `key` in `scope`, or replay the answer it already gave.

        Raises IdempotencyKeyMismatch (the key was used with another fingerprint),
        IdempotencyKeyInUse (a request with the key is still in flight), ValidationFailed
        (an invalid key), or whatever `operation` raised.
        """
        validate_idempotency_key(key)
        claimed = await self._claim_cancel_safe(key, scope, fingerprint)
        if isinstance(claimed, Outcome):
            return claimed
        claim = claimed
        lost_claim = False
        try:
            if prepare is not None:
                await prepare()
            async with self._db.transaction() as conn:
                response = await operation(conn)
                row = await conn.fetchrow(
                    COMPLETE_SQL,
                    claim.id,
                    claim.locked_at,
                    response.status,
                    _to_json(response.body),
                    _to_json(dict(response.headers)),
                    self.retention,
                )
                if row is None:
                    # Another worker took the key over: roll our effects back.
                    lost_claim = True
                    raise IdempotencyKeyInUse(
                        "This request took too long and was taken over by a retry."
                    )
        except asyncio.CancelledError:
            await self._shielded(self._release(claim))
            raise
        except Exception as exc:
            if not lost_claim:
                await self._shielded(self._settle_failure(claim, exc, store_error))
            raise
        return Outcome(_stored_response(row), replayed=False)

    async def purge_expired(self, *, batch_size: int = 1000) -> int:
        """Delete expired keys in batches of `batch_size`; return how many were deleted."""
        total = 0
        async with self._db.connection() as conn:
            while True:
                status: str = await conn.execute(PURGE_EXPIRED_SQL, batch_size)
                deleted = rows_affected(status)
                total += deleted
                if deleted < batch_size:
                    return total

    # --- claiming -----------------------------------------------------------------------

    async def _claim_cancel_safe(
        self, key: str, scope: IdempotencyScope, fingerprint: str
    ) -> _Claim | Outcome:
        """Claim, and if cancelled meanwhile, give back a claim that landed anyway."""
        task = asyncio.ensure_future(self._claim(key, scope, fingerprint))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._release_orphaned_claim)
            raise

    def _release_orphaned_claim(self, task: asyncio.Future[_Claim | Outcome]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        claimed = task.result()
        if isinstance(claimed, _Claim):
            self._spawn(self._release(claimed))

    async def _claim(self, key: str, scope: IdempotencyScope, fingerprint: str) -> _Claim | Outcome:
        where = (scope.principal, scope.method, scope.route, key)
        async with self._db.connection() as conn:
            # Each statement commits on its own: a claim is visible to everyone at once.
            for _ in range(self._max_claim_attempts):
                row = await conn.fetchrow(CLAIM_SQL, *where, fingerprint, self.retention)
                if row is not None:
                    return _Claim(row["id"], row["locked_at"])
                seen = await conn.fetchrow(READ_SQL, *where, self.in_flight_timeout)
                if seen is None:
                    continue  # released between our insert and our read: claim again
                if seen["expired"]:
                    await conn.execute(DELETE_EXPIRED_SQL, seen["id"])
                    continue
                if seen["fingerprint"] != fingerprint:
                    raise IdempotencyKeyMismatch()
                if seen["status"] == "completed":
                    return Outcome(_stored_response(seen), replayed=True)
                if not seen["stale"]:
                    raise IdempotencyKeyInUse()
                locked_at = await conn.fetchval(
                    TAKE_OVER_SQL, seen["id"], seen["locked_at"], self.retention
                )
                if locked_at is not None:
                    logger.warning(
                        "took over a stale idempotency claim",
                        extra={"method": scope.method, "route": scope.route},
                    )
                    return _Claim(seen["id"], locked_at)
                # Someone else moved the row first: look again.
        raise IdempotencyKeyInUse()

    # --- settling -----------------------------------------------------------------------

    async def _settle_failure(self, claim: _Claim, exc: Exception, store_error: StoreError) -> None:
        """Keep the answer `store_error` makes of `exc`, or else give the key back."""
        try:
            stored = store_error(exc)
            if stored is not None:
                async with self._db.connection() as conn:
                    await conn.execute(
                        COMPLETE_SQL,
                        claim.id,
                        claim.locked_at,
                        stored.status,
                        _to_json(stored.body),
                        _to_json(dict(stored.headers)),
                        self.retention,
                    )
                return
        except Exception:
            logger.exception("could not store the error answer of an idempotent request")
        await self._release(claim)

    async def drain(self) -> None:
        """Wait for claim clean-ups still running (call before closing the pool)."""
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)

    async def _release(self, claim: _Claim) -> None:
        """Delete our claim so the client may retry; on failure it goes stale instead."""
        try:
            async with self._db.connection() as conn:
                await conn.execute(RELEASE_SQL, claim.id, claim.locked_at)
        except Exception:
            logger.exception("could not release an idempotency claim; it will go stale")

    def _spawn(self, cleanup: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(cleanup)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        return task

    async def _shielded(self, cleanup: Coroutine[Any, Any, None]) -> None:
        """Run `cleanup` to the end even if the caller is cancelled meanwhile."""
        await asyncio.shield(self._spawn(cleanup))
