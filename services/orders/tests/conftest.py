"""Orders test fixtures: orders and a REAL catalog (on a socket, behind a chaos proxy).

Orders reaches catalog over real HTTP through `catalog_proxy`, which a test switches to
refuse, reset or hang connections; `slow_catalog` is an HTTP hop a test points orders at
instead, to let a reservation land while its answer comes too late. Orders' service token
comes from a small token endpoint that signs with the test issuer (the JWKS catalog
verifies against): the real auth service is exercised by the system tests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from fastapi import FastAPI

from bazaar.catalog.app import create_app as create_catalog_app
from bazaar.catalog.cli import MIGRATIONS_DIR as CATALOG_MIGRATIONS
from bazaar.catalog.config import CatalogSettings
from bazaar.orders.app import create_app
from bazaar.orders.cli import MIGRATIONS_DIR
from bazaar.orders.config import OrdersSettings
from bazaar.shared import migrations
from bazaar.shared.problem import PROBLEM_BASE_URI
from bazaar.shared.testing.amqp import eventually as shared_eventually
from bazaar.shared.testing.asgi import serve_in_process
from bazaar.shared.testing.chaos import ChaosProxy, chaos_proxy
from bazaar.shared.testing.postgres import DatabaseFactory, empty_tables, json_connection
from bazaar.shared.testing.server import serve_on_socket
from bazaar.shared.testing.tokens import JwksServer, TokenIssuer

CUSTOMER_SCOPES = ("orders:read", "orders:write")
ADMIN_SCOPES = ("orders:read", "orders:write", "orders:admin")
CLIENT_ID = "orders"
CLIENT_SECRET = "test-orders-client-secret"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def orders_database_url(database_factory: DatabaseFactory) -> str:
    """The orders database of this run, migrated to head."""
    url = await database_factory.create("orders")
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS_DIR, url)
    return url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def orders_catalog_database_url(database_factory: DatabaseFactory) -> str:
    """The database of the catalog the orders tests talk to, migrated to head."""
    url = await database_factory.create("orders_catalog")
    await asyncio.to_thread(migrations.upgrade, CATALOG_MIGRATIONS, url)
    return url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def catalog_url(
    orders_catalog_database_url: str, jwks_server: JwksServer
) -> AsyncIterator[str]:
    """A real catalog app serving on a 127.0.0.1 socket for the whole run."""
    settings = CatalogSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=orders_catalog_database_url,
        db_pool_max=30,
        jwt_jwks_url=jwks_server.url,
        jwt_issuer=TokenIssuer.ISSUER,
        jwt_audience=TokenIssuer.AUDIENCE,
    )
    async with serve_on_socket(create_catalog_app(settings)) as url:
        yield url


@dataclass
class TokenEndpoint:
    """A client_credentials token endpoint signing with the test issuer."""

    issuer: TokenIssuer
    url: str = ""
    issued: list[str] = field(default_factory=list)
    #: While set, the endpoint answers 503 (auth is down).
    down: bool = False
    #: Lifetime of the tokens it issues.
    expires_in: int = 900
    #: How many of the next tokens are issued already expired (catalog refuses them with
    #: 401) while `expires_in` still promises a long life: a token that died early.
    stale_tokens: int = 0

    async def token(self, request: web.Request) -> web.Response:
        if self.down:
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        form = await request.post()
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        lifetime = self.expires_in
        if self.stale_tokens > 0:
            self.stale_tokens -= 1
            lifetime = -3600
        token = self.issuer.issue(
            "orders", ["catalog:reserve"], client_id=CLIENT_ID, expires_in=lifetime
        )
        self.issued.append(token)
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
        )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def token_endpoint(token_issuer: TokenIssuer) -> AsyncIterator[TokenEndpoint]:
    """Auth's token endpoint, as far as orders needs it."""
    endpoint = TokenEndpoint(token_issuer)
    app = web.Application()
    app.router.add_post("/v1/auth/token", endpoint.token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    endpoint.url = f"http://127.0.0.1:{port}"
    yield endpoint
    await runner.cleanup()


#: Headers one HTTP hop must not pass on.
_HOP_BY_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection"})


@dataclass
class SlowCatalog:
    """An HTTP hop in front of catalog that can hold back catalog's answer to a reservation.

    Every request is forwarded to the real catalog at once, so a reservation lands; only the
    answer is held back (past orders' read timeout) while `hold_next` or `holding` says so.
    """

    target: str
    session: aiohttp.ClientSession
    url: str = ""
    #: How many of the next reservation answers to hold back.
    hold_next: int = 0
    #: While set, every reservation answer is held back.
    holding: bool = False
    #: While set, every request is answered 503 and catalog never sees it.
    down: bool = False
    #: How long an answer is held at most (orders has long given up by then).
    hold_seconds: float = 5.0
    #: Order ids whose reservations are answered 409 idempotency-key-in-use (an earlier
    #: attempt stuck in catalog) without reaching catalog, while other orders are served.
    stuck: set[str] = field(default_factory=set)
    #: How long a stuck order's 409 takes (so other calls are answered while it is asked).
    stuck_seconds: float = 0.0
    #: The status of every reservation catalog answered, held back or not.
    answered: list[int] = field(default_factory=list)
    held: int = 0
    #: Reservation requests received, whatever became of them.
    reservations_seen: int = 0
    #: Reservation requests in flight now, per Idempotency-Key; keys ever in flight twice at
    #: once; the most reservation requests in flight at once.
    in_flight: dict[str, int] = field(default_factory=dict)
    overlapping: set[str] = field(default_factory=set)
    most_in_flight: int = 0
    _let_go: asyncio.Event = field(default_factory=asyncio.Event)

    async def forward(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST" or request.path != "/v1/reservations":
            return await self._forward(request)
        self.reservations_seen += 1
        key = request.headers.get("Idempotency-Key", "")
        self.in_flight[key] = self.in_flight.get(key, 0) + 1
        if self.in_flight[key] > 1:
            self.overlapping.add(key)
        self.most_in_flight = max(self.most_in_flight, sum(self.in_flight.values()))
        try:
            return await self._forward(request)
        finally:
            self.in_flight[key] -= 1

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if self.down:
            return web.json_response({"detail": "catalog is down"}, status=503)
        data = await request.read()
        if request.path == "/v1/reservations" and data and _order_id(data) in self.stuck:
            await asyncio.sleep(self.stuck_seconds)
            problem = {"type": PROBLEM_BASE_URI + "idempotency-key-in-use", "status": 409}
            return web.json_response(problem, status=409)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self.session.request(
            request.method,
            self.target + request.rel_url.raw_path_qs,
            data=data,
            headers=headers,
        ) as upstream:
            body = await upstream.read()
            content_type = upstream.headers.get("Content-Type")
            status = upstream.status
        if request.method == "POST" and request.path == "/v1/reservations":
            self.answered.append(status)
            if self.holding or self.hold_next > 0:
                self.hold_next = max(0, self.hold_next - 1)
                self.held += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.hold_seconds):
                        await self._let_go.wait()
        response = web.Response(status=status, body=body)
        if content_type:
            response.headers["Content-Type"] = content_type
        return response

    def let_go(self) -> None:
        """Stop holding answers, and answer those held now."""
        self.holding = False
        self.hold_next = 0
        self._let_go.set()


def _order_id(body: bytes) -> str | None:
    try:
        order_id = json.loads(body).get("order_id")
    except (ValueError, AttributeError):
        return None
    return str(order_id) if order_id else None


@pytest_asyncio.fixture
async def slow_catalog(catalog_url: str) -> AsyncIterator[SlowCatalog]:
    """Catalog behind a hop that can hold answers back; point orders at it with
    `orders_settings.model_copy(update={"catalog_url": slow_catalog.url})`."""
    async with aiohttp.ClientSession() as session:
        fake = SlowCatalog(catalog_url, session)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", fake.forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        fake.url = f"http://127.0.0.1:{port}"
        try:
            yield fake
        finally:
            fake.let_go()
            await runner.cleanup()


@pytest_asyncio.fixture
async def catalog_proxy(catalog_url: str) -> AsyncIterator[ChaosProxy]:
    """The way from orders to catalog; switch its mode to break catalog."""
    async with chaos_proxy(catalog_url) as proxy:
        yield proxy


@pytest.fixture
def orders_settings(
    orders_database_url: str,
    catalog_proxy: ChaosProxy,
    token_endpoint: TokenEndpoint,
    jwks_server: JwksServer,
) -> OrdersSettings:
    """Settings with short timeouts, a quick breaker and a quick reconciler."""
    token_endpoint.down = False
    token_endpoint.expires_in = 900
    token_endpoint.stale_tokens = 0
    token_endpoint.issued.clear()
    return OrdersSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=orders_database_url,
        db_pool_max=40,
        jwt_jwks_url=jwks_server.url,
        jwt_issuer=TokenIssuer.ISSUER,
        jwt_audience=TokenIssuer.AUDIENCE,
        catalog_url=catalog_proxy.url,
        auth_url=token_endpoint.url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        catalog_connect_timeout_seconds=0.5,
        catalog_read_timeout_seconds=0.5,
        catalog_deadline_seconds=1.5,
        catalog_attempts=3,
        catalog_breaker_fail_max=3,
        catalog_breaker_reset_seconds=1.0,
        reconcile_interval_seconds=0.2,
        reconcile_backoff_seconds=0.2,
        reconcile_max_backoff_seconds=0.5,
        pending_max_age_seconds=60,
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def table_cleaner(
    orders_database_url: str, orders_catalog_database_url: str
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """`await table_cleaner()` empties the orders and catalog databases (one connection each)."""
    urls = [orders_database_url, orders_catalog_database_url]
    conns = [await asyncpg.connect(url, timeout=30) for url in urls]

    async def clean() -> None:
        for conn, url in zip(conns, urls, strict=True):
            await empty_tables(conn, url)

    try:
        yield clean
    finally:
        for conn in conns:
            await conn.close()


@pytest_asyncio.fixture
async def orders_app(
    orders_settings: OrdersSettings, table_cleaner: Callable[[], Awaitable[None]]
) -> FastAPI:
    """An orders app over emptied orders and catalog databases (not started)."""
    await table_cleaner()
    return create_app(orders_settings)


@pytest_asyncio.fixture
async def client(orders_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client talking to a started orders app (its reconciler runs)."""
    async with serve_in_process(orders_app, base_url="http://orders.test") as c:
        yield c


@pytest.fixture
def customer(token_issuer: TokenIssuer) -> Callable[..., dict[str, str]]:
    """Authorization headers of a customer (orders:read orders:write unless scopes given)."""

    def headers(
        subject: str = "customer-1", scopes: tuple[str, ...] = CUSTOMER_SCOPES
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {token_issuer.issue(subject, scopes)}"}

    return headers


@pytest.fixture
def admin(token_issuer: TokenIssuer) -> dict[str, str]:
    """Authorization headers of an orders admin."""
    return {"Authorization": f"Bearer {token_issuer.issue('admin-1', ADMIN_SCOPES)}"}


@pytest_asyncio.fixture
async def catalog(catalog_url: str, token_issuer: TokenIssuer) -> AsyncIterator[httpx.AsyncClient]:
    """A client straight to catalog (not through the proxy), as a product writer."""
    token = token_issuer.issue("catalog-admin", ["catalog:write"])
    async with httpx.AsyncClient(
        base_url=catalog_url, headers={"Authorization": f"Bearer {token}"}
    ) as c:
        yield c


@pytest.fixture
def new_product(catalog: httpx.AsyncClient) -> Callable[..., Awaitable[dict[str, Any]]]:
    """Create a product in catalog and return its body (stock 10, 1000 EUR cents by default)."""
    numbers = itertools.count(1)

    async def create(**fields: Any) -> dict[str, Any]:
        body = {
            "sku": f"ORD-{uuid.uuid4().hex[:6]}-{next(numbers)}",
            "name": "Test product",
            "price_cents": 1000,
            "currency": "EUR",
            "stock": 10,
            **fields,
        }
        response = await catalog.post("/v1/products", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    return create


@pytest_asyncio.fixture
async def catalog_db(orders_app: FastAPI, orders_catalog_database_url: str) -> AsyncIterator[Any]:
    """A connection to catalog's database, for what catalog stored."""
    async with json_connection(orders_catalog_database_url) as conn:
        yield conn


@pytest_asyncio.fixture
async def orders_db(orders_app: FastAPI, orders_settings: OrdersSettings) -> AsyncIterator[Any]:
    """A connection to orders' database, for what orders stored."""
    async with json_connection(orders_settings.dsn()) as conn:
        yield conn


@pytest.fixture
def stock_of(catalog_db: Any) -> Callable[[str], Awaitable[int]]:
    """The stock catalog holds for a product id."""

    async def stock(product_id: str) -> int:
        value = await catalog_db.fetchval(
            "SELECT stock FROM product WHERE id = $1", uuid.UUID(product_id)
        )
        assert value is not None, f"no product {product_id}"
        return int(value)

    return stock


@pytest.fixture
def reservations_for(catalog_db: Any) -> Callable[[str], Awaitable[list[dict[str, Any]]]]:
    """The reservations catalog holds for an order id (`id`, `status`), oldest first."""

    async def reservations(order_id: str) -> list[dict[str, Any]]:
        rows = await catalog_db.fetch(
            "SELECT id, status FROM reservation WHERE order_id = $1 ORDER BY created_at",
            uuid.UUID(order_id),
        )
        return [dict(row) for row in rows]

    return reservations


@pytest.fixture
def stored_orders(orders_db: Any) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
    """Every row of orders' customer_order table, oldest first."""

    async def rows() -> list[dict[str, Any]]:
        found = await orders_db.fetch("SELECT * FROM customer_order ORDER BY created_at, id")
        return [dict(row) for row in found]

    return rows


@pytest.fixture
def order_events(orders_db: Any) -> Callable[..., Awaitable[list[dict[str, Any]]]]:
    """The CloudEvents in orders' outbox (oldest first), optionally of one type."""

    async def events(type: str | None = None) -> list[dict[str, Any]]:
        rows = await orders_db.fetch(
            "SELECT event FROM outbox WHERE $1::text IS NULL OR type = $1::text ORDER BY position",
            type,
        )
        return [row["event"] for row in rows]

    return events


@pytest.fixture
def place(
    client: httpx.AsyncClient, customer: Callable[..., dict[str, str]]
) -> Callable[..., Awaitable[httpx.Response]]:
    """POST /v1/orders with a fresh Idempotency-Key unless one is given."""

    async def post(
        lines: list[dict[str, Any]],
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = {**(headers or customer()), "Idempotency-Key": key or str(uuid.uuid4())}
        return await client.post("/v1/orders", json={"lines": lines}, headers=sent)

    return post


@pytest.fixture
def eventually() -> Callable[..., Awaitable[None]]:
    """`await eventually(check)`: poll an async predicate until it holds (10 s at most)."""
    return shared_eventually
