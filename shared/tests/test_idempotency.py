"""The idempotency store against a real PostgreSQL: claim, execute, replay, take over, purge."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from bazaar.shared.db import Database, PoolSettings
from bazaar.shared.idempotency import (
    IDEMPOTENCY_DDL,
    IDEMPOTENCY_DDL_STATEMENTS,
    IDEMPOTENCY_DROP_DDL,
    IdempotencyKeyInUse,
    IdempotencyKeyMismatch,
    IdempotencyKeyMissing,
    IdempotencyScope,
    IdempotencyStore,
    Outcome,
    StoredResponse,
    request_fingerprint,
)
from bazaar.shared.idempotency.store import Operation
from bazaar.shared.problem import ValidationFailed
from bazaar.shared.testing.postgres import DatabaseFactory, execute_within

EFFECT_DDL = "CREATE TABLE effect (id bigserial PRIMARY KEY, note text NOT NULL)"
SCOPE = IdempotencyScope(principal="alice", method="POST", route="/v1/orders")
BODY = {"lines": [{"product_id": "p-1", "quantity": 2}]}
FINGERPRINT = request_fingerprint(BODY)
CREATED = StoredResponse(201, {"id": "o-1", "status": "confirmed"}, {"location": "/v1/orders/o-1"})
WAIT = 10.0


class OutOfStock(Exception):
    """The business refuses: a 4xx worth replaying."""


@pytest_asyncio.fixture(scope="session")
async def db(database_factory: DatabaseFactory) -> AsyncIterator[Database]:
    url = await database_factory.create("idem")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(IDEMPOTENCY_DDL)
        await conn.execute(EFFECT_DDL)
    finally:
        await conn.close()
    database = Database(PoolSettings(dsn=url, max_size=30))
    await database.open()
    yield database
    await database.close()


@pytest.fixture(autouse=True)
async def _clean_tables(db: Database) -> None:
    async with db.connection() as conn:
        await execute_within(conn, "TRUNCATE idempotency_key, effect", db.settings.dsn)


@pytest.fixture
def store(db: Database) -> IdempotencyStore:
    return IdempotencyStore(db)


class Recorder:
    """Operations that write one `effect` row and count how often they ran."""

    def __init__(self) -> None:
        self.calls = 0

    def writes(self, note: str, response: StoredResponse = CREATED) -> Operation:
        async def operation(conn: Any) -> StoredResponse:
            self.calls += 1
            await conn.execute("INSERT INTO effect (note) VALUES ($1)", note)
            return response

        return operation

    def writes_then_raises(self, note: str, exc: Exception) -> Operation:
        async def operation(conn: Any) -> StoredResponse:
            self.calls += 1
            await conn.execute("INSERT INTO effect (note) VALUES ($1)", note)
            raise exc

        return operation


class Gate:
    """An operation that writes its effect, then waits until released."""

    def __init__(self, note: str, response: StoredResponse = CREATED) -> None:
        self.note = note
        self.response = response
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def operation(self, conn: Any) -> StoredResponse:
        await conn.execute("INSERT INTO effect (note) VALUES ($1)", self.note)
        self.started.set()
        await self.release.wait()
        return self.response


async def effects(db: Database) -> list[str]:
    async with db.connection() as conn:
        return [r["note"] for r in await conn.fetch("SELECT note FROM effect ORDER BY id")]


async def key_rows(db: Database) -> list[asyncpg.Record]:
    async with db.connection() as conn:
        return list(await conn.fetch("SELECT * FROM idempotency_key ORDER BY created_at"))


async def run(
    store: IdempotencyStore,
    operation: Operation,
    *,
    key: str = "key-1",
    scope: IdempotencyScope = SCOPE,
    fingerprint: str = FINGERPRINT,
    **kwargs: Any,
) -> Outcome:
    return await store.run(
        key=key, scope=scope, fingerprint=fingerprint, operation=operation, **kwargs
    )


async def test_the_ddl_creates_the_table_with_its_named_unique_constraint_and_expiry_index(
    db: Database,
) -> None:
    async with db.connection() as conn:
        constraint = await conn.fetchrow(
            "SELECT contype::text, pg_get_constraintdef(oid) AS def FROM pg_constraint "
            "WHERE conname = 'idempotency_key_scope_key'"
        )
        indexes = await conn.fetch(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'idempotency_key'"
        )
    assert constraint is not None
    assert constraint["contype"] == "u"
    assert constraint["def"] == "UNIQUE (principal, method, route, key)"
    assert any("(expires_at)" in r["indexdef"] for r in indexes)


async def test_the_ddl_is_one_statement_so_a_migration_through_prepared_statements_can_run_it(
    db: Database,
) -> None:
    async with db.connection() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute("CREATE SCHEMA ddl_check")
            await conn.execute("SET LOCAL search_path TO ddl_check")
            # SQLAlchemy's asyncpg driver (Alembic) prepares every statement, as here.
            await (await conn.prepare(IDEMPOTENCY_DDL)).fetch()
            assert await conn.fetchval("SELECT to_regclass('ddl_check.idempotency_key')::text")
            await (await conn.prepare(IDEMPOTENCY_DROP_DDL)).fetch()
            assert await conn.fetchval("SELECT to_regclass('ddl_check.idempotency_key')") is None
            for statement in IDEMPOTENCY_DDL_STATEMENTS:
                await conn.execute(statement)
            assert await conn.fetchval("SELECT to_regclass('ddl_check.idempotency_key')::text")
        finally:
            await transaction.rollback()


def test_the_fingerprint_is_the_same_for_the_same_json_whatever_the_key_order() -> None:
    assert request_fingerprint({"a": 1, "b": [1, 2]}) == request_fingerprint({"b": [1, 2], "a": 1})
    assert request_fingerprint({"a": 1}) != request_fingerprint({"a": 2})
    assert len(request_fingerprint(None)) == 64


def test_the_errors_carry_their_status_slug_and_retry_after() -> None:
    assert (IdempotencyKeyMissing.status, IdempotencyKeyMissing.slug) == (
        400,
        "idempotency-key-missing",
    )
    assert (IdempotencyKeyMismatch.status, IdempotencyKeyMismatch.slug) == (
        422,
        "idempotency-key-mismatch",
    )
    in_use = IdempotencyKeyInUse()
    assert (in_use.status, in_use.slug) == (409, "idempotency-key-in-use")
    assert in_use.headers == {"Retry-After": "1"}


async def test_the_first_call_runs_the_operation_once_and_stores_its_answer(
    db: Database, store: IdempotencyStore
) -> None:
    recorder = Recorder()
    outcome = await run(store, recorder.writes("first"))

    assert outcome == Outcome(CREATED, replayed=False)
    assert recorder.calls == 1
    assert await effects(db) == ["first"]
    [row] = await key_rows(db)
    assert row["status"] == "completed"
    assert (row["principal"], row["method"], row["route"], row["key"]) == (
        "alice",
        "POST",
        "/v1/orders",
        "key-1",
    )
    assert row["fingerprint"] == FINGERPRINT
    assert row["response_status"] == 201
    assert row["response_body"] == CREATED.body
    assert row["response_headers"] == {"location": "/v1/orders/o-1"}
    assert row["completed_at"] is not None
    assert row["expires_at"] - row["completed_at"] == timedelta(hours=24)


async def test_a_replay_returns_the_stored_answer_and_does_not_run_the_operation_again(
    db: Database, store: IdempotencyStore
) -> None:
    recorder = Recorder()
    first = await run(store, recorder.writes("first"))
    second = await run(store, recorder.writes("second"))

    assert second == Outcome(first.response, replayed=True)
    assert recorder.calls == 1
    assert await effects(db) == ["first"]


async def test_the_first_answer_is_returned_as_stored_so_it_equals_every_replay(
    store: IdempotencyStore,
) -> None:
    order_id = uuid.uuid4()
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    response = StoredResponse(201, {"id": order_id, "at": at, "lines": (1, 2)}, {})
    first = await run(store, Recorder().writes("first", response))
    again = await run(store, Recorder().writes("again"))

    assert first.response.body == {"id": str(order_id), "at": at.isoformat(), "lines": [1, 2]}
    assert again.response == first.response


async def test_the_same_key_with_another_body_is_a_mismatch(
    db: Database, store: IdempotencyStore
) -> None:
    recorder = Recorder()
    await run(store, recorder.writes("first"))

    with pytest.raises(IdempotencyKeyMismatch) as caught:
        await run(store, recorder.writes("other"), fingerprint=request_fingerprint({"x": 1}))

    assert caught.value.status == 422
    assert recorder.calls == 1
    assert await effects(db) == ["first"]


async def test_the_same_key_from_another_principal_method_or_route_is_independent(
    db: Database, store: IdempotencyStore
) -> None:
    scopes = [
        SCOPE,
        IdempotencyScope("bob", "POST", "/v1/orders"),
        IdempotencyScope("alice", "PUT", "/v1/orders"),
        IdempotencyScope("alice", "POST", "/v1/reservations"),
    ]
    outcomes = [
        await run(store, Recorder().writes(f"effect-{i}"), scope=scope)
        for i, scope in enumerate(scopes)
    ]

    assert [o.replayed for o in outcomes] == [False] * 4
    assert await effects(db) == ["effect-0", "effect-1", "effect-2", "effect-3"]
    assert len(await key_rows(db)) == 4


async def test_a_request_while_the_first_is_in_flight_is_409_and_another_body_is_still_422(
    db: Database, store: IdempotencyStore
) -> None:
    gate = Gate("first")
    first = asyncio.create_task(run(store, gate.operation))
    async with asyncio.timeout(WAIT):
        await gate.started.wait()

    with pytest.raises(IdempotencyKeyInUse) as caught:
        await run(store, Recorder().writes("second"))
    assert caught.value.headers["Retry-After"] == "1"
    with pytest.raises(IdempotencyKeyMismatch):
        await run(store, Recorder().writes("third"), fingerprint=request_fingerprint({}))

    gate.release.set()
    async with asyncio.timeout(WAIT):
        assert (await first).replayed is False
    assert (await run(store, Recorder().writes("fourth"))).replayed is True
    assert await effects(db) == ["first"]


async def test_a_stale_in_flight_claim_is_taken_over_and_the_slow_worker_rolls_back(
    db: Database, store: IdempotencyStore
) -> None:
    slow = Gate("slow", StoredResponse(201, {"by": "slow"}, {}))
    slow_task = asyncio.create_task(run(store, slow.operation))
    async with asyncio.timeout(WAIT):
        await slow.started.wait()
    async with db.connection() as conn:  # the slow worker looks crashed: its lock is old
        await conn.execute("UPDATE idempotency_key SET locked_at = now() - interval '2 minutes'")

    taken_over = await run(store, Recorder().writes("retry", StoredResponse(201, {"by": "retry"})))
    assert taken_over == Outcome(StoredResponse(201, {"by": "retry"}, {}), replayed=False)

    slow.release.set()
    with pytest.raises(IdempotencyKeyInUse):
        async with asyncio.timeout(WAIT):
            await slow_task

    assert await effects(db) == ["retry"]
    [row] = await key_rows(db)
    assert (row["status"], row["response_body"]) == ("completed", {"by": "retry"})
    assert (await run(store, Recorder().writes("later"))).response.body == {"by": "retry"}


async def test_a_claim_whose_worker_is_gone_is_taken_over_once_its_lease_runs_out(
    db: Database,
) -> None:
    store = IdempotencyStore(db, in_flight_timeout=timedelta(seconds=1))
    async with db.connection() as conn:  # what a replica that crashed mid-request leaves
        await conn.execute(
            "INSERT INTO idempotency_key (principal, method, route, key, fingerprint, status,"
            " locked_at, expires_at) VALUES ($1, $2, $3, 'key-1', $4, 'in_flight', now(),"
            " now() + interval '1 day')",
            SCOPE.principal,
            SCOPE.method,
            SCOPE.route,
            FINGERPRINT,
        )

    with pytest.raises(IdempotencyKeyInUse):  # its lease still runs
        await run(store, Recorder().writes("too-early"))
    await asyncio.sleep(1.5)
    assert (await run(store, Recorder().writes("retry"))).replayed is False  # ran out

    assert await effects(db) == ["retry"]


async def test_a_request_in_flight_longer_than_its_lease_keeps_the_key_until_it_answers(
    db: Database,
) -> None:
    store = IdempotencyStore(db, in_flight_timeout=timedelta(seconds=1))
    slow = Gate("slow")
    slow_task = asyncio.create_task(run(store, slow.operation))
    async with asyncio.timeout(WAIT):
        await slow.started.wait()

    refused = 0
    try:
        for _ in range(8):  # four leases long: the running request renews its claim
            with pytest.raises(IdempotencyKeyInUse):
                await run(store, Recorder().writes("too-early"))
            refused += 1
            await asyncio.sleep(0.5)
    finally:
        slow.release.set()
        async with asyncio.timeout(WAIT):
            first = await slow_task

    assert refused == 8
    assert first == Outcome(CREATED, replayed=False)
    assert await run(store, Recorder().writes("replay")) == Outcome(CREATED, replayed=True)
    assert await effects(db) == ["slow"]


async def test_an_expired_key_is_ignored_and_claimed_afresh(
    db: Database, store: IdempotencyStore
) -> None:
    await run(store, Recorder().writes("first"))
    async with db.connection() as conn:
        await conn.execute("UPDATE idempotency_key SET expires_at = now() - interval '1 second'")

    # Even another body is fine now: the old key no longer counts.
    outcome = await run(store, Recorder().writes("second"), fingerprint=request_fingerprint({}))

    assert outcome.replayed is False
    assert await effects(db) == ["first", "second"]
    [row] = await key_rows(db)
    assert row["status"] == "completed"
    assert row["fingerprint"] == request_fingerprint({})


async def test_purging_deletes_the_expired_keys_and_keeps_the_others(
    db: Database, store: IdempotencyStore
) -> None:
    for i in range(5):
        await run(store, Recorder().writes(f"e{i}"), key=f"key-{i}")
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE idempotency_key SET expires_at = now() - interval '1 second' "
            "WHERE key IN ('key-0', 'key-1', 'key-2')"
        )

    assert await store.purge_expired(batch_size=2) == 3
    assert sorted(r["key"] for r in await key_rows(db)) == ["key-3", "key-4"]
    assert await store.purge_expired() == 0


async def test_the_effect_and_the_answer_commit_together_so_a_failure_leaves_nothing(
    db: Database, store: IdempotencyStore
) -> None:
    recorder = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        await run(store, recorder.writes_then_raises("doomed", RuntimeError("boom")))

    assert await effects(db) == []
    assert await key_rows(db) == []  # the claim is released: the client may retry

    outcome = await run(store, recorder.writes("retried"))
    assert outcome.replayed is False
    assert recorder.calls == 2
    assert await effects(db) == ["retried"]


async def test_an_answer_that_is_not_json_rolls_back_and_releases_the_claim(
    db: Database, store: IdempotencyStore
) -> None:
    with pytest.raises(TypeError):
        await run(store, Recorder().writes("doomed", StoredResponse(201, {"x": object()}, {})))

    assert await effects(db) == []
    assert await key_rows(db) == []


async def test_a_stored_error_answer_is_replayed_and_the_operation_is_not_run_again(
    db: Database, store: IdempotencyStore
) -> None:
    refused = StoredResponse(
        409, {"type": "insufficient-stock"}, {"content-type": "application/problem+json"}
    )

    def store_error(exc: Exception) -> StoredResponse | None:
        return refused if isinstance(exc, OutOfStock) else None

    recorder = Recorder()
    with pytest.raises(OutOfStock):
        await run(
            store,
            recorder.writes_then_raises("half-done", OutOfStock()),
            store_error=store_error,
        )
    replay = await run(store, recorder.writes("never"), store_error=store_error)

    assert replay == Outcome(refused, replayed=True)
    assert recorder.calls == 1
    assert await effects(db) == []


async def test_an_error_store_error_declines_releases_the_claim(
    db: Database, store: IdempotencyStore
) -> None:
    with pytest.raises(OutOfStock):
        await run(
            store,
            Recorder().writes_then_raises("half-done", OutOfStock()),
            store_error=lambda _: None,
        )

    assert await key_rows(db) == []


async def test_twenty_concurrent_requests_with_one_key_have_the_effect_exactly_once(
    db: Database, store: IdempotencyStore
) -> None:
    calls = 0

    async def operation(conn: Any) -> StoredResponse:
        nonlocal calls
        calls += 1
        await conn.execute("INSERT INTO effect (note) VALUES ('once')")
        await asyncio.sleep(0.05)
        return CREATED

    async def attempt() -> Outcome | IdempotencyKeyInUse:
        try:
            return await run(store, operation)
        except IdempotencyKeyInUse as exc:
            return exc

    async with asyncio.timeout(WAIT):
        results = await asyncio.gather(*(attempt() for _ in range(20)))

    fresh = [r for r in results if isinstance(r, Outcome) and not r.replayed]
    others = [r for r in results if not (isinstance(r, Outcome) and not r.replayed)]
    assert len(fresh) == 1
    assert all(
        isinstance(r, IdempotencyKeyInUse) or (isinstance(r, Outcome) and r.response == CREATED)
        for r in others
    )
    assert calls == 1
    assert await effects(db) == ["once"]
    assert len(await key_rows(db)) == 1


async def test_cancelling_a_request_in_flight_rolls_back_and_releases_its_claim(
    db: Database, store: IdempotencyStore
) -> None:
    gate = Gate("cancelled")
    task = asyncio.create_task(run(store, gate.operation))
    async with asyncio.timeout(WAIT):
        await gate.started.wait()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await effects(db) == []
    assert await key_rows(db) == []
    assert (await run(store, Recorder().writes("retried"))).replayed is False
    assert await effects(db) == ["retried"]


async def test_cancelling_a_request_while_it_claims_gives_a_landed_claim_back(
    db: Database, store: IdempotencyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    released = asyncio.Event()
    release = store._release

    async def spy_release(claim: Any) -> None:
        await release(claim)
        released.set()

    monkeypatch.setattr(store, "_release", spy_release)
    recorder = Recorder()
    task = asyncio.create_task(run(store, recorder.writes("never")))
    await asyncio.sleep(0)  # the claim is on its way to the database
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async with asyncio.timeout(WAIT):
        await released.wait()  # the claim landed after all, and was given back
    assert await key_rows(db) == []
    assert recorder.calls == 0
    assert (await run(store, recorder.writes("retried"))).replayed is False


@pytest.mark.parametrize(
    ("key", "error_type"),
    [
        ("", "string_too_short"),
        ("k" * 256, "string_too_long"),
        ("has space", "string_pattern_mismatch"),
        ("tab\tbed", "string_pattern_mismatch"),
        ("ünïcode", "string_pattern_mismatch"),
    ],
)
async def test_an_invalid_key_is_rejected_before_anything_is_stored(
    db: Database, store: IdempotencyStore, key: str, error_type: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await run(store, Recorder().writes("never"), key=key)

    [error] = caught.value.extensions["errors"]
    assert error["loc"] == ["header", "Idempotency-Key"]
    assert error["type"] == error_type
    assert await key_rows(db) == []


async def test_a_key_of_255_visible_characters_is_accepted(store: IdempotencyStore) -> None:
    key = "~!" + "k" * 253
    assert (await run(store, Recorder().writes("ok"), key=key)).replayed is False


async def test_prepare_runs_once_before_the_answering_transaction_and_not_on_replay(
    store: IdempotencyStore, db: Database
) -> None:
    recorder = Recorder()
    held_during_prepare: list[int] = []

    async def prepare() -> None:
        # No connection of the store's is held while prepare waits (a remote call, say).
        held_during_prepare.append(db.pool.get_size() - db.pool.get_idle_size())

    first = await store.run(
        key="k-prepare",
        scope=SCOPE,
        fingerprint=FINGERPRINT,
        operation=recorder.writes("one"),
        prepare=prepare,
    )
    again = await store.run(
        key="k-prepare",
        scope=SCOPE,
        fingerprint=FINGERPRINT,
        operation=recorder.writes("two"),
        prepare=prepare,
    )
    assert (first.replayed, again.replayed) == (False, True)
    assert recorder.calls == 1
    assert held_during_prepare == [0]


async def test_a_failing_prepare_gives_the_key_back_and_runs_no_operation(
    store: IdempotencyStore,
) -> None:
    recorder = Recorder()

    async def prepare() -> None:
        raise ConnectionError("the remote side went away")

    with pytest.raises(ConnectionError):
        await store.run(
            key="k-prepare-fails",
            scope=SCOPE,
            fingerprint=FINGERPRINT,
            operation=recorder.writes("never"),
            prepare=prepare,
        )
    assert recorder.calls == 0
    retried = await store.run(
        key="k-prepare-fails", scope=SCOPE, fingerprint=FINGERPRINT, operation=recorder.writes("ok")
    )
    assert retried.replayed is False
    assert recorder.calls == 1
