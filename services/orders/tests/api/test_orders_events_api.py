"""GET /v1/orders/{id}/events: the order now, then each change, as Server-Sent Events."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from bazaar.orders.adapters.consumers import on_stock_released
from bazaar.orders.app import create_app
from bazaar.orders.config import OrdersSettings
from bazaar.shared.stopping import stop_notice
from bazaar.shared.testing.chaos import ChaosProxy, Mode
from bazaar.shared.testing.server import serve_on_socket
from bazaar.shared.testing.sse import open_stream

#: API.md: every change reaches an open stream within this long of its commit.
LATENCY_BUDGET_SECONDS = 0.5


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """`app` on a real socket (streams are flushed event by event), and a client of it."""
    async with serve_on_socket(app) as url:
        async with httpx.AsyncClient(
            base_url=url, timeout=10, limits=httpx.Limits(max_connections=None)
        ) as client:
            yield client
        stop_notice(app).set()


@pytest_asyncio.fixture
async def http(
    orders_settings: OrdersSettings, table_cleaner: Callable[[], Awaitable[None]]
) -> AsyncIterator[httpx.AsyncClient]:
    await table_cleaner()
    async with serving(create_app(orders_settings)) as client:
        yield client


@pytest.fixture
def order_of(
    http: httpx.AsyncClient, customer: Callable[..., dict[str, str]], new_product: Any
) -> Callable[..., Awaitable[dict[str, Any]]]:
    """Place an order of one unit of a new product (stock 5 unless given); its body."""

    async def place(
        *, subject: str = "alice", stock: int = 5, quantity: int = 1, expect: int = 201
    ) -> dict[str, Any]:
        product = await new_product(stock=stock)
        response = await http.post(
            "/v1/orders",
            json={"lines": [{"product_id": product["id"], "quantity": quantity}]},
            headers={**customer(subject), "Idempotency-Key": str(uuid.uuid4())},
        )
        assert response.status_code == expect, response.text
        if expect == 409:
            got = await http.get(response.headers["Location"], headers=customer(subject))
            body: dict[str, Any] = got.json()
            return body
        placed: dict[str, Any] = response.json()
        return placed

    return place


def _events(order_id: str) -> str:
    return f"/v1/orders/{order_id}/events"


def _order(received: Any) -> dict[str, Any]:
    assert received.event.event == "order"
    body: dict[str, Any] = json.loads(received.event.data)
    return body


async def test_the_first_event_is_the_order_as_get_returns_it_sent_at_once(
    http: httpx.AsyncClient, customer: Any, order_of: Any
) -> None:
    order = await order_of()
    got = await http.get(f"/v1/orders/{order['id']}", headers=customer("alice"))

    started = time.perf_counter()
    async with open_stream(http, _events(order["id"]), headers=customer("alice")) as stream:
        first = await stream.next()

    assert stream.response.status_code == 200
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    assert stream.response.headers["cache-control"] == "no-store"
    assert first.at - started < LATENCY_BUDGET_SECONDS
    assert first.event.event == "order"
    assert first.event.id.isdigit()
    assert _order(first) == got.json()


async def test_a_cancel_reaches_an_open_stream_within_500_ms_of_its_commit(
    http: httpx.AsyncClient, customer: Any, order_of: Any
) -> None:
    order = await order_of()
    async with open_stream(http, _events(order["id"]), headers=customer("alice")) as stream:
        first = await stream.next()
        # The commit comes after this instant: the time measured bounds the latency.
        before_commit = time.perf_counter()
        cancelled = await http.post(f"/v1/orders/{order['id']}/cancel", headers=customer("alice"))
        change = await stream.next()

    assert cancelled.status_code == 200
    assert change.at - before_commit < LATENCY_BUDGET_SECONDS
    assert _order(change) == cancelled.json()
    assert int(change.event.id) > int(first.event.id)


async def test_a_reconnect_with_last_event_id_gets_the_change_made_while_away_at_once(
    http: httpx.AsyncClient, customer: Any, order_of: Any
) -> None:
    order = await order_of()
    async with open_stream(http, _events(order["id"]), headers=customer("alice")) as stream:
        first = await stream.next()
    # Dropped; the order changes while the client is away.
    cancelled = await http.post(f"/v1/orders/{order['id']}/cancel", headers=customer("alice"))

    async with open_stream(
        http, _events(order["id"]), headers=customer("alice"), last_event_id=first.event.id
    ) as again:
        missed = await again.next(within=LATENCY_BUDGET_SECONDS)

    assert _order(missed) == cancelled.json()
    assert int(missed.event.id) > int(first.event.id)


async def test_a_reconnect_with_the_latest_id_gets_nothing_until_the_next_change(
    http: httpx.AsyncClient, customer: Any, order_of: Any
) -> None:
    order = await order_of()
    async with open_stream(http, _events(order["id"]), headers=customer("alice")) as stream:
        first = await stream.next()

    async with open_stream(
        http, _events(order["id"]), headers=customer("alice"), last_event_id=first.event.id
    ) as again:
        assert again.response.status_code == 200
        assert await again.quiet_for(0.5)
        cancelled = await http.post(f"/v1/orders/{order['id']}/cancel", headers=customer("alice"))
        change = await again.next()

    assert _order(change) == cancelled.json()


async def test_an_id_that_is_not_a_cursor_of_the_order_counts_as_none(
    http: httpx.AsyncClient, customer: Any, order_of: Any
) -> None:
    order = await order_of()
    for last_event_id in ("abc", "-1", "1.0", "99999999999"):
        async with open_stream(
            http, _events(order["id"]), headers=customer("alice"), last_event_id=last_event_id
        ) as stream:
            first = await stream.next(within=LATENCY_BUDGET_SECONDS)
        assert _order(first)["id"] == order["id"], last_event_id


async def _release_stock(orders_db: Any, order_id: str) -> None:
    """Catalog's catalog.stock.released for the order's reservation, as the consumer gets it."""
    reservation_id = await orders_db.fetchval(
        "SELECT reservation_id FROM customer_order WHERE id = $1", uuid.UUID(order_id)
    )
    event = {
        "id": str(uuid.uuid4()),
        "type": "catalog.stock.released",
        "data": {"order_id": order_id, "reservation_id": str(reservation_id), "lines": []},
    }
    async with orders_db.transaction():
        await on_stock_released(orders_db, event)


async def test_a_cancelled_order_streams_until_its_stock_is_released_then_ends(
    http: httpx.AsyncClient, customer: Any, order_of: Any, orders_db: Any
) -> None:
    order = await order_of()
    async with open_stream(http, _events(order["id"]), headers=customer("alice")) as stream:
        await stream.next()
        await http.post(f"/v1/orders/{order['id']}/cancel", headers=customer("alice"))
        cancelled = _order(await stream.next())
        assert (cancelled["status"], cancelled["stock_released"]) == ("cancelled", False)
        assert await stream.quiet_for(0.3)  # not final yet: the stream stays open

        before_commit = time.perf_counter()
        await _release_stock(orders_db, order["id"])
        released = await stream.next()
        await stream.end()

    assert released.at - before_commit < LATENCY_BUDGET_SECONDS
    assert (_order(released)["status"], _order(released)["stock_released"]) == ("cancelled", True)
    got = await http.get(f"/v1/orders/{order['id']}", headers=customer("alice"))
    assert _order(released) == got.json()


async def test_after_the_final_event_a_reconnect_gets_204_and_one_without_id_the_final_state(
    http: httpx.AsyncClient, customer: Any, order_of: Any, catalog_proxy: ChaosProxy
) -> None:
    await catalog_proxy.set_mode(Mode.REFUSE)
    pending = await order_of(expect=202)
    async with open_stream(http, _events(pending["id"]), headers=customer("alice")) as stream:
        assert _order(await stream.next())["status"] == "pending"
        # Nothing was reserved: the stock counts as released at once, a final state.
        await http.post(f"/v1/orders/{pending['id']}/cancel", headers=customer("alice"))
        final = await stream.next()
        await stream.end()
    assert (_order(final)["status"], _order(final)["stock_released"]) == ("cancelled", True)

    async with open_stream(
        http, _events(pending["id"]), headers=customer("alice"), last_event_id=final.event.id
    ) as again:
        await again.end()
    assert again.response.status_code == 204
    assert again.received == []

    async with open_stream(http, _events(pending["id"]), headers=customer("alice")) as fresh:
        only = await fresh.next()
        await fresh.end()
    assert only.event.id == final.event.id
    assert _order(only) == _order(final)


async def test_a_rejected_order_sends_its_state_and_ends(
    http: httpx.AsyncClient, customer: Any, order_of: Any
) -> None:
    rejected = await order_of(stock=1, quantity=2, expect=409)
    assert rejected["status"] == "rejected"

    async with open_stream(http, _events(rejected["id"]), headers=customer("alice")) as stream:
        only = await stream.next()
        await stream.end()

    assert _order(only) == rejected
    assert len(stream.received) == 1


async def test_the_reconcilers_confirmation_of_a_pending_order_reaches_its_stream(
    http: httpx.AsyncClient, customer: Any, order_of: Any, catalog_proxy: ChaosProxy
) -> None:
    await catalog_proxy.set_mode(Mode.REFUSE)
    pending = await order_of(expect=202)
    async with open_stream(http, _events(pending["id"]), headers=customer("alice")) as stream:
        assert _order(await stream.next())["status"] == "pending"
        await catalog_proxy.set_mode(Mode.FORWARD)
        confirmed = _order(await stream.next(within=10))

    assert confirmed["status"] == "confirmed"
    got = await http.get(f"/v1/orders/{pending['id']}", headers=customer("alice"))
    assert confirmed == got.json()


async def test_an_idle_stream_sends_a_keep_alive_comment_at_the_configured_pace(
    orders_settings: OrdersSettings,
    table_cleaner: Callable[[], Awaitable[None]],
    customer: Any,
    new_product: Any,
) -> None:
    await table_cleaner()
    settings = orders_settings.model_copy(update={"stream_keepalive_seconds": 0.3})
    async with serving(create_app(settings)) as client:
        product = await new_product()
        placed = await client.post(
            "/v1/orders",
            json={"lines": [{"product_id": product["id"], "quantity": 1}]},
            headers={**customer(), "Idempotency-Key": str(uuid.uuid4())},
        )
        lines: list[tuple[str, float]] = []
        async with client.stream("GET", _events(placed.json()["id"]), headers=customer()) as got:
            async for line in got.aiter_lines():
                lines.append((line, time.perf_counter()))
                if sum(text == ": keep-alive" for text, _ in lines) == 3:
                    break

    comments = [at for text, at in lines if text.startswith(":")]
    assert [text for text, _ in lines if text.startswith(":")] == [": keep-alive"] * 3
    # The first comes one interval after the first event; then one per interval.
    gaps = [b - a for a, b in itertools.pairwise(comments)]
    assert all(0.2 < gap < 0.3 + LATENCY_BUDGET_SECONDS for gap in gaps), gaps


def test_the_keep_alive_interval_cannot_exceed_15_seconds(orders_settings: OrdersSettings) -> None:
    with pytest.raises(ValueError, match="stream_keepalive_seconds"):
        OrdersSettings(**{**orders_settings.model_dump(), "stream_keepalive_seconds": 20})


async def test_another_customers_order_and_an_unknown_one_answer_404(
    http: httpx.AsyncClient, customer: Any, order_of: Any
) -> None:
    order = await order_of(subject="alice")

    for url in (_events(order["id"]), _events(str(uuid.uuid4()))):
        got = await http.get(url, headers=customer("mallory"))
        assert got.status_code == 404, url
        assert got.headers["content-type"] == "application/problem+json"
        assert order["customer_id"] not in got.text


async def test_an_admin_follows_any_customers_order(
    http: httpx.AsyncClient, admin: dict[str, str], order_of: Any
) -> None:
    order = await order_of(subject="alice")
    async with open_stream(http, _events(order["id"]), headers=admin) as stream:
        first = await stream.next()
    assert _order(first)["customer_id"] == "alice"


async def test_no_token_answers_401_and_a_token_without_orders_read_403(
    http: httpx.AsyncClient, customer: Any, order_of: Any
) -> None:
    order = await order_of(subject="alice")

    anonymous = await http.get(_events(order["id"]))
    writer_only = await http.get(
        _events(order["id"]), headers=customer("alice", scopes=("orders:write",))
    )

    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert writer_only.status_code == 403
    assert writer_only.json()["type"].endswith("/forbidden")


async def test_the_stop_notice_ends_open_streams_cleanly_and_another_replica_resumes(
    orders_settings: OrdersSettings,
    table_cleaner: Callable[[], Awaitable[None]],
    customer: Any,
    new_product: Any,
) -> None:
    await table_cleaner()
    replica, other = create_app(orders_settings), create_app(orders_settings)
    async with serving(replica) as first, serving(other) as second:
        product = await new_product()
        placed = await first.post(
            "/v1/orders",
            json={"lines": [{"product_id": product["id"], "quantity": 1}]},
            headers={**customer(), "Idempotency-Key": str(uuid.uuid4())},
        )
        url = _events(placed.json()["id"])
        async with open_stream(first, url, headers=customer()) as stream:
            seen = await stream.next()
            stopping = time.perf_counter()
            stop_notice(replica).set()  # as the server does when a shutdown begins
            await stream.end(within=2)  # a complete answer, no error
            ended = time.perf_counter()
        # The order changes while the client moves to the other replica.
        cancelled = await second.post(f"{url.removesuffix('/events')}/cancel", headers=customer())
        async with open_stream(
            second, url, headers=customer(), last_event_id=seen.event.id
        ) as resumed:
            missed = await resumed.next(within=LATENCY_BUDGET_SECONDS)

    assert ended - stopping < LATENCY_BUDGET_SECONDS
    assert _order(missed) == cancelled.json()
