"""The idempotency store: claim a key, run the operation, store its answer in the same commit.

Stripe semantics (see DESIGN.md, "Idempotency"):

1. Claim. An `INSERT ... ON CONFLICT ON CONSTRAINT idempotency_key_scope_key DO NOTHING`
   commits on its own, so concurrent requests with the same key see the claim at once. When
   the key is taken: an expired row is deleted and claimed again; another fingerprint is
   `IdempotencyKeyMismatch`; a completed row is replayed; a row in flight is
   `IdempotencyKeyInUse`, unless its lease ran out (`locked_at` older than the in-flight
   timeout: its worker is gone), in which case it is taken over with a compare-and-set on
   `locked_at` that gives the row a new id (the id is the claim's fencing token).
2. Execute. While the request runs, its claim's lease is renewed every quarter of the
   in-flight timeout (one statement for all claims, on the renewer's own connection, so a
   saturated pool cannot starve it), so a request in flight stays 409 however long it takes. The
   operation runs inside one transaction, and the row is marked completed in THAT
   transaction (guarded by the id we hold): effect and stored answer commit together or not
   at all.
3. Failure. The business transaction rolls back; `store_error` may turn the exception into
   an answer to keep (a 4xx the client should see again), otherwise the claim is deleted so
   the client may retry. Cancellation releases the claim. A release that fails (the
   database is down) is retried in the background until it lands or the lease has run out,
   so the key is free again within a second of the database coming back, and a crashed
   worker's key within the in-flight timeout. The exception always propagates.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from bazaar.shared.backoff import Backoff
from bazaar.shared.db import Database, rows_affected
from bazaar.shared.idempotency.codec import stored_response, to_json
from bazaar.shared.idempotency.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyMismatch,
    validate_idempotency_key,
)
from bazaar.shared.idempotency.lease import LeaseKeeper
from bazaar.shared.idempotency.models import (
    ClaimWith,
    IdempotencyScope,
    Outcome,
    StoredResponse,
)
from bazaar.shared.idempotency.schema import (
    CLAIM_SQL,
    COMPLETE_SQL,
    DELETE_EXPIRED_SQL,
    PURGE_EXPIRED_SQL,
    READ_SQL,
    RELEASE_SQL,
    TAKE_OVER_SQL,
    claim_with_sql,
)
from bazaar.shared.outbox import hold_events, with_held_events

logger = logging.getLogger(__name__)

#: COMPLETE_SQL with the events the operation added (held back) inserted by it too.
COMPLETE_WITH_EVENTS_SQL = with_held_events(COMPLETE_SQL, first=6)

Operation = Callable[[asyncpg.Connection], Awaitable[StoredResponse]]
#: Work done after the key is claimed and before the answering transaction opens (a remote
#: call, say), so no connection is held while it waits. A takeover runs it again: it must be
#: idempotent itself.
Prepare = Callable[[], Awaitable[None]]
StoreError = Callable[[Exception], StoredResponse | None]

DEFAULT_RETENTION = timedelta(hours=24)
#: The claim's lease: renewed every quarter of it while its request runs.
DEFAULT_IN_FLIGHT_TIMEOUT = timedelta(seconds=10)
#: How long shutdown waits for claims still being given back (their lease covers the rest).
DRAIN_TIMEOUT_SECONDS = 2.0
#: First and longest pause between attempts to give a claim back while the database is down.
_RELEASE_RETRY_FIRST, _RELEASE_RETRY_MAX = 0.1, 1.0


def _store_nothing(_exc: Exception) -> StoredResponse | None:
    return None


@dataclass(frozen=True, slots=True)
class _Claim:
    """A key we hold: its row id, which stays ours until a takeover changes it."""

    id: uuid.UUID


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
        self._draining = False
        self._leases = LeaseKeeper(db.settings, in_flight_timeout.total_seconds() / 4)

    async def run(
        self,
        *,
        key: str,
        scope: IdempotencyScope,
        fingerprint: str,
        operation: Operation,
        store_error: StoreError = _store_nothing,
        prepare: Prepare | None = None,
        claim_with: ClaimWith | None = None,
    ) -> Outcome:
        """Run `operation` once for `key` in `scope`, or replay the answer it already gave.

        `claim_with` writes a first effect in the claim's own statement (see `ClaimWith`).

        Raises IdempotencyKeyMismatch (the key was used with another fingerprint),
        IdempotencyKeyInUse (a request with the key is still in flight), ValidationFailed
        (an invalid key), or whatever `operation` raised.
        """
        validate_idempotency_key(key)
        claimed = await self._claim_cancel_safe(key, scope, fingerprint, claim_with)
        if isinstance(claimed, Outcome):
            return claimed
        claim = claimed
        lost_claim = False
        self._leases.hold(claim.id)
        try:
            try:
                if prepare is not None:
                    await prepare()
                async with self._db.transaction() as conn:
                    # The operation's events ride on the completing statement.
                    with hold_events(conn) as held:
                        response = await operation(conn)
                    completion = (
                        claim.id,
                        response.status,
                        to_json(response.body),
                        to_json(dict(response.headers)),
                        self.retention,
                    )
                    if held.rows:
                        row = await conn.fetchrow(
                            COMPLETE_WITH_EVENTS_SQL, *completion, *held.args()
                        )
                    else:
                        row = await conn.fetchrow(COMPLETE_SQL, *completion)
                    if row is None:
                        # Another worker took the key over: roll our effects back.
                        lost_claim = True
                        raise IdempotencyKeyInUse(
                            "This request took too long and was taken over by a retry."
                        )
            finally:
                self._leases.let_go(claim.id)
        except asyncio.CancelledError:
            await self._shielded(self._release(claim))
            raise
        except Exception as exc:
            if not lost_claim:
                await self._shielded(self._settle_failure(claim, exc, store_error))
            raise
        return Outcome(stored_response(row), replayed=False)

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
        self,
        key: str,
        scope: IdempotencyScope,
        fingerprint: str,
        claim_with: ClaimWith | None = None,
    ) -> _Claim | Outcome:
        """Claim, and if cancelled meanwhile, give back a claim that landed anyway."""
        task = asyncio.ensure_future(self._claim(key, scope, fingerprint, claim_with))
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

    async def _claim(
        self,
        key: str,
        scope: IdempotencyScope,
        fingerprint: str,
        claim_with: ClaimWith | None = None,
    ) -> _Claim | Outcome:
        where = (scope.principal, scope.method, scope.route, key)
        async with self._db.connection() as conn:
            # Each statement commits on its own: a claim is visible to everyone at once.
            for _ in range(self._max_claim_attempts):
                if claim_with is None:
                    row = await conn.fetchrow(CLAIM_SQL, *where, fingerprint, self.retention)
                    if row is not None:
                        return _Claim(row["id"])
                else:
                    row = await conn.fetchrow(
                        claim_with_sql(claim_with.sql),
                        *where,
                        fingerprint,
                        self.retention,
                        *claim_with.args,
                    )
                    if row is not None:
                        claim_with.landed(row if row["effect_landed"] else None)
                        return _Claim(row["claim_id"])
                seen = await conn.fetchrow(READ_SQL, *where, self.in_flight_timeout)
                if seen is None:
                    continue  # released between our insert and our read: claim again
                if seen["expired"]:
                    await conn.execute(DELETE_EXPIRED_SQL, seen["id"])
                    continue
                if seen["fingerprint"] != fingerprint:
                    raise IdempotencyKeyMismatch()
                if seen["status"] == "completed":
                    return Outcome(stored_response(seen), replayed=True)
                if not seen["stale"]:
                    raise IdempotencyKeyInUse()
                taken = await conn.fetchval(
                    TAKE_OVER_SQL, seen["id"], seen["locked_at"], self.retention
                )
                if taken is not None:
                    logger.warning(
                        "took over a stale idempotency claim",
                        extra={"method": scope.method, "route": scope.route},
                    )
                    return _Claim(taken)
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
                        stored.status,
                        to_json(stored.body),
                        to_json(dict(stored.headers)),
                        self.retention,
                    )
                return
        except Exception:
            logger.exception("could not store the error answer of an idempotent request")
        await self._release(claim)

    async def drain(self, grace: float = DRAIN_TIMEOUT_SECONDS) -> None:
        """Wait a while for claim clean-ups still running, then stop them (before closing
        the pool); a claim not given back by then is free once its lease runs out."""
        self._draining = True  # no new retries: their lease covers what is left
        await self._leases.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # Loop: a clean-up may spawn another (a failed release its retry) while we wait.
        while self._cleanups and loop.time() < deadline:
            await asyncio.wait(set(self._cleanups), timeout=deadline - loop.time())
        while self._cleanups:
            pending = set(self._cleanups)
            for task in pending:
                task.cancel()
            await asyncio.wait(pending)

    async def _release(self, claim: _Claim) -> None:
        """Delete our claim so the client may retry; if that fails, keep trying meanwhile."""
        if not await self._try_release(claim) and not self._draining:
            self._spawn(self._release_until_done(claim))

    async def _try_release(self, claim: _Claim) -> bool:
        try:
            async with self._db.connection() as conn:
                await conn.execute(RELEASE_SQL, claim.id)
        except Exception as exc:
            logger.warning("could not release an idempotency claim (%s)", type(exc).__name__)
            return False
        return True

    async def _release_until_done(self, claim: _Claim) -> None:
        """Retry giving a claim back until it lands, or its lease has run out anyway."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.in_flight_timeout.total_seconds()
        backoff = Backoff(_RELEASE_RETRY_FIRST, _RELEASE_RETRY_MAX)
        while loop.time() < deadline:
            await backoff.sleep()
            if await self._try_release(claim):
                logger.info("released an idempotency claim after the database came back")
                return

    def _spawn(self, cleanup: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(cleanup)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        return task

    async def _shielded(self, cleanup: Coroutine[Any, Any, None]) -> None:
        """Run `cleanup` to the end even if the caller is cancelled meanwhile."""
        await asyncio.shield(self._spawn(cleanup))
