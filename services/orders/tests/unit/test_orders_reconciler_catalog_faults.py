"""The reconciler against a real catalog client, with the breaker settings orders ships.

An outage (auth down, catalog refusing, catalog overloaded) never expires an order, and one
failed claim, a trial or a shutdown never turns into a burst of calls or an open breaker.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bazaar.orders.adapters.breaker import make_breaker
from bazaar.orders.adapters.catalog import CallPolicy, CatalogClient
from bazaar.orders.adapters.tokens import ServiceTokens
from bazaar.orders.config import OrdersSettings
from bazaar.orders.domain.model import Order, OrderStatus, RequestedLine, unpriced_lines
from bazaar.orders.service.reconcile import ReconcilePolicy, reconcile_once
from bazaar.shared.db import DatabaseBusy

MUG = uuid.uuid4()
FIELDS = OrdersSettings.model_fields
FAIL_MAX: int = FIELDS["catalog_breaker_fail_max"].default
RESET: float = FIELDS["catalog_breaker_reset_seconds"].default
MAX_RESET: float = FIELDS["catalog_breaker_max_reset_seconds"].default
QUICK = CallPolicy(read_timeout=0.3, deadline=2.0)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Token:
    async def get(self) -> str:
        return "t"

    def invalidate(self, token: str) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _breaker() -> Any:
    return make_breaker(
        "catalog", fail_max=FAIL_MAX, reset_timeout=RESET, max_reset_timeout=MAX_RESET
    )


def _pending(transactions: Any, age: timedelta) -> Order:
    created = datetime.now(UTC) - age
    order = Order(
        id=uuid.uuid4(),
        customer_id="alice",
        status=OrderStatus.PENDING,
        lines=unpriced_lines([RequestedLine(MUG, 1)]),
        created_at=created,
        updated_at=created,
    )
    transactions.orders.rows[order.id] = order
    return order


def _reserved(body: Any) -> web.Response:
    lines = [
        {**line, "sku": "MUG", "name": "Mug", "unit_price_cents": 100} for line in body["lines"]
    ]
    payload = {"id": str(uuid.uuid4()), "total_cents": 100, "currency": "EUR", "lines": lines}
    return web.json_response(payload, status=201)


@pytest.fixture
async def catalog_url() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def serve(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/v1/reservations", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        port = _free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}"

    yield serve
    for runner in runners:
        await runner.cleanup()


async def test_an_old_order_stays_pending_while_auth_is_down(transactions: Any) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    order = _pending(transactions, timedelta(minutes=20))
    async with aiohttp.ClientSession() as session:
        tokens = ServiceTokens(
            session, token_url=dead + "/v1/auth/token", client_id="orders", client_secret="x"
        )
        catalog = CatalogClient(session, base_url=dead, tokens=tokens, breaker=_breaker())
        await reconcile_once(transactions=transactions, catalog=catalog, policy=ReconcilePolicy())

    assert transactions.orders.rows[order.id].status is OrderStatus.PENDING
    assert transactions.events.added == []


async def test_a_lone_old_order_stays_pending_while_catalog_refuses_connections(
    transactions: Any,
) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    order = _pending(transactions, timedelta(minutes=16))
    async with aiohttp.ClientSession() as session:
        breaker = _breaker()
        catalog = CatalogClient(session, base_url=dead, tokens=_Token(), breaker=breaker)
        await reconcile_once(transactions=transactions, catalog=catalog, policy=ReconcilePolicy())

    assert transactions.orders.rows[order.id].status is OrderStatus.PENDING
    assert transactions.events.added == []


async def test_an_old_order_whose_retry_finds_its_first_attempt_in_flight_is_served_later(
    transactions: Any, catalog_url: Callable[[Handler], Awaitable[str]]
) -> None:
    calls = 0

    async def overloaded(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        body = await request.json()
        if calls == 1:
            await asyncio.sleep(1.0)  # past the read timeout: the client tries again
            return _reserved(body)
        if calls == 2:
            problem = {"type": "https://bazaar.example/problems/idempotency-key-in-use"}
            return web.json_response(problem, status=409)
        return _reserved(body)

    url = await catalog_url(overloaded)
    order = _pending(transactions, timedelta(minutes=16))
    async with aiohttp.ClientSession() as session:
        catalog = CatalogClient(
            session, base_url=url, tokens=_Token(), breaker=_breaker(), policy=QUICK
        )
        await reconcile_once(transactions=transactions, catalog=catalog, policy=ReconcilePolicy())
        assert transactions.orders.rows[order.id].status is OrderStatus.PENDING
        transactions.orders.end_leases()
        await reconcile_once(transactions=transactions, catalog=catalog, policy=ReconcilePolicy())

    assert transactions.orders.rows[order.id].status is OrderStatus.CONFIRMED


async def test_an_old_order_catalog_keeps_failing_while_it_answers_others_is_rejected(
    transactions: Any, catalog_url: Callable[[Handler], Awaitable[str]]
) -> None:
    old = _pending(transactions, timedelta(minutes=16))

    async def sick_for_one(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body["order_id"] == str(old.id):
            await asyncio.sleep(0.1)
            return web.json_response({"title": "broken"}, status=503)
        return _reserved(body)

    url = await catalog_url(sick_for_one)
    young = [_pending(transactions, timedelta(seconds=30)) for _ in range(20)]
    async with aiohttp.ClientSession() as session:
        catalog = CatalogClient(
            session, base_url=url, tokens=_Token(), breaker=_breaker(), policy=QUICK
        )
        await reconcile_once(transactions=transactions, catalog=catalog, policy=ReconcilePolicy())

    assert transactions.orders.rows[old.id].status is OrderStatus.REJECTED
    assert transactions.orders.rows[old.id].reject_reason == "pending-too-long"
    assert all(transactions.orders.rows[o.id].status is OrderStatus.CONFIRMED for o in young)


async def test_a_failed_claim_lets_the_orders_in_flight_finish_and_keeps_the_breaker_closed(
    transactions: Any, catalog_url: Callable[[Handler], Awaitable[str]]
) -> None:
    answered = 0

    async def staggered(request: web.Request) -> web.StreamResponse:
        nonlocal answered
        body = await request.json()
        answered += 1
        await asyncio.sleep(0.05 + (answered % 32) * 0.02)  # half done when a claim fails
        return _reserved(body)

    url = await catalog_url(staggered)
    orders = [_pending(transactions, timedelta(seconds=30)) for _ in range(100)]
    real_claim, claims = transactions.orders.claim_due, 0

    async def claim_due(**kwargs: Any) -> list[Order]:
        nonlocal claims
        claims += 1
        if claims == 2:
            raise DatabaseBusy()
        result: list[Order] = await real_claim(**kwargs)
        return result

    transactions.orders.claim_due = claim_due
    async with aiohttp.ClientSession() as session:
        breaker = _breaker()
        catalog = CatalogClient(session, base_url=url, tokens=_Token(), breaker=breaker)
        await reconcile_once(transactions=transactions, catalog=catalog, policy=ReconcilePolicy())

    first = ReconcilePolicy().concurrency
    confirmed = [
        o for o in orders if transactions.orders.rows[o.id].status is OrderStatus.CONFIRMED
    ]
    assert len(confirmed) == first
    assert breaker.current_state == "closed" and breaker.fail_counter == 0


async def test_a_cancelled_round_lets_its_calls_finish_and_keeps_the_breaker_closed(
    transactions: Any, catalog_url: Callable[[Handler], Awaitable[str]]
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        await asyncio.sleep(0.3)
        return _reserved(body)

    url = await catalog_url(slow)
    orders = [_pending(transactions, timedelta(seconds=30)) for _ in range(10)]
    async with aiohttp.ClientSession() as session:
        breaker = _breaker()
        catalog = CatalogClient(session, base_url=url, tokens=_Token(), breaker=breaker)
        task = asyncio.create_task(
            reconcile_once(transactions=transactions, catalog=catalog, policy=ReconcilePolicy())
        )
        await asyncio.sleep(0.1)
        task.cancel()  # shutdown
        with pytest.raises(asyncio.CancelledError):
            await task

    assert all(transactions.orders.rows[o.id].status is OrderStatus.CONFIRMED for o in orders)
    assert breaker.current_state == "closed" and breaker.fail_counter == 0


async def test_a_trial_stopped_before_it_reaches_catalog_is_the_only_order_leased_that_round(
    transactions: Any,
) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    for _ in range(50):
        _pending(transactions, timedelta(minutes=1))
    async with aiohttp.ClientSession() as session:
        tokens = ServiceTokens(
            session, token_url=dead + "/v1/auth/token", client_id="orders", client_secret="x"
        )
        breaker = _breaker()
        breaker.open()
        await asyncio.sleep(RESET)  # its first trial is due
        catalog = CatalogClient(session, base_url=dead, tokens=tokens, breaker=breaker)
        seen = await reconcile_once(
            transactions=transactions, catalog=catalog, policy=ReconcilePolicy()
        )

    assert seen == 1


async def test_a_catalog_call_cancelled_from_outside_is_no_failure_of_catalog(
    catalog_url: Callable[[Handler], Awaitable[str]],
) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        await asyncio.sleep(0.3)
        return _reserved(body)

    url = await catalog_url(slow)
    async with aiohttp.ClientSession() as session:
        breaker = make_breaker("catalog", fail_max=1, reset_timeout=60)
        catalog = CatalogClient(session, base_url=url, tokens=_Token(), breaker=breaker)
        call = asyncio.create_task(catalog.reserve(uuid.uuid4(), [RequestedLine(MUG, 1)]))
        await asyncio.sleep(0.1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    assert breaker.current_state == "closed"


async def test_a_catalog_call_outliving_its_deadline_is_a_failure_of_catalog(
    catalog_url: Callable[[Handler], Awaitable[str]],
) -> None:
    async def hangs(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(2.0)
        return web.json_response({}, status=201)

    url = await catalog_url(hangs)
    async with aiohttp.ClientSession() as session:
        breaker = make_breaker("catalog", fail_max=1, reset_timeout=60)
        policy = CallPolicy(read_timeout=10.0, deadline=0.2, attempts=1)
        catalog = CatalogClient(
            session, base_url=url, tokens=_Token(), breaker=breaker, policy=policy
        )
        outcome = await catalog.reserve(uuid.uuid4(), [RequestedLine(MUG, 1)])

    assert type(outcome).__name__ == "Unavailable"
    assert breaker.current_state == "open"
