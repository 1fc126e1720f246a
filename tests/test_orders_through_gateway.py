"""The whole path through the gateway: register, log in, list, order, replay, cancel, restock.

Every part is real: auth, catalog and orders serve on sockets with their own databases,
their outbox relays and consumers run against this run's RabbitMQ vhost, and the client
only ever talks to the gateway.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from bazaar.auth.app import create_app as create_auth
from bazaar.auth.config import AuthSettings, ClientConfig
from bazaar.catalog.app import create_app as create_catalog
from bazaar.catalog.config import CatalogSettings
from bazaar.gateway.app import create_app as create_gateway
from bazaar.gateway.config import GatewaySettings, UpstreamConfig
from bazaar.orders.app import create_app as create_orders
from bazaar.orders.config import OrdersSettings
from bazaar.shared.testing.amqp import eventually
from bazaar.shared.testing.server import serve_on_socket

ISSUER = "http://gateway.orders-system.test"
ADMIN = ("admin@orders-system.test", "orders-system-admin-password")
ORDERS_SECRET = "orders-system-client-secret"
CUSTOMER = {"email": "dora@orders-system.test", "password": "doras long password", "name": "Dora"}

Gateway = TestClient[web.Request, web.Application]


@asynccontextmanager
async def suite(databases: dict[str, str], amqp_url: str) -> AsyncIterator[Gateway]:
    """Auth, catalog and orders on sockets, events through RabbitMQ, the gateway in front."""
    common: dict[str, Any] = {
        "_env_file": None,
        "environment": "test",
        "jwt_issuer": ISSUER,
        "amqp_url": amqp_url,
        "outbox_poll_seconds": 0.2,
    }
    async with AsyncExitStack() as stack:
        auth_url = await stack.enter_async_context(
            serve_on_socket(
                create_auth(
                    AuthSettings(
                        **common,
                        database_url=databases["auth"],
                        admin_email=ADMIN[0],
                        admin_password=SecretStr(ADMIN[1]),
                        clients=(
                            ClientConfig(
                                client_id="orders",
                                secret=SecretStr(ORDERS_SECRET),
                                scopes=("catalog:reserve",),
                            ),
                        ),
                    )
                )
            )
        )
        jwks = {"jwt_jwks_url": f"{auth_url}/.well-known/jwks.json"}
        catalog_url = await stack.enter_async_context(
            serve_on_socket(
                create_catalog(CatalogSettings(**common, **jwks, database_url=databases["catalog"]))
            )
        )
        orders_url = await stack.enter_async_context(
            serve_on_socket(
                create_orders(
                    OrdersSettings(
                        **common,
                        **jwks,
                        database_url=databases["orders"],
                        catalog_url=catalog_url,
                        auth_url=auth_url,
                        client_secret=SecretStr(ORDERS_SECRET),
                    )
                )
            )
        )
        gateway_settings = GatewaySettings(
            _env_file=None,  # type: ignore[call-arg]
            environment="test",
            jwt_issuer=ISSUER,
            jwt_jwks_url=jwks["jwt_jwks_url"],
            # As deployed: the response cache hears catalog's events on the run's vhost.
            amqp_url=SecretStr(amqp_url),
            upstreams={
                "auth": UpstreamConfig(url=auth_url),
                "catalog": UpstreamConfig(url=catalog_url),
                "orders": UpstreamConfig(url=orders_url),
            },
        )
        gateway: Gateway = TestClient(
            TestServer(create_gateway(gateway_settings), host="127.0.0.1")
        )
        await gateway.start_server()
        stack.push_async_callback(gateway.close)
        yield gateway


async def _login(gateway: Gateway, email: str, password: str) -> dict[str, str]:
    response = await gateway.post(
        "/v1/auth/token", data={"grant_type": "password", "username": email, "password": password}
    )
    assert response.status == 200, await response.text()
    return {"Authorization": f"Bearer {(await response.json())['access_token']}"}


async def test_a_customer_orders_replays_and_cancels_through_the_gateway_and_stock_comes_back(
    system_databases: dict[str, str], amqp_url: str
) -> None:
    async with suite(system_databases, amqp_url) as gateway:
        admin = await _login(gateway, *ADMIN)
        created = await gateway.post(
            "/v1/products",
            json={
                "sku": "SYS-ORD-1",
                "name": "Lamp",
                "price_cents": 1250,
                "currency": "EUR",
                "stock": 4,
            },
            headers=admin,
        )
        assert created.status == 201, await created.text()
        product = await created.json()

        registered = await gateway.post("/v1/users", json=CUSTOMER)
        assert registered.status == 201, await registered.text()
        customer = await _login(gateway, CUSTOMER["email"], CUSTOMER["password"])

        listed = await gateway.get("/v1/products", params={"q": "lamp"})
        assert listed.status == 200
        assert [p["id"] for p in (await listed.json())["items"]] == [product["id"]]

        key = {"Idempotency-Key": str(uuid.uuid4())}
        body = {"lines": [{"product_id": product["id"], "quantity": 3}]}
        placed = await gateway.post("/v1/orders", json=body, headers={**customer, **key})
        assert placed.status == 201, await placed.text()
        order = await placed.json()
        assert order["status"] == "confirmed"
        assert order["total_cents"] == 3750
        assert placed.headers["Location"] == f"/v1/orders/{order['id']}"
        assert "X-Trace-Id" in placed.headers

        replay = await gateway.post("/v1/orders", json=body, headers={**customer, **key})
        assert replay.status == 201
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert await replay.json() == order

        async def stock() -> int:
            response = await gateway.get(f"/v1/products/{product['id']}")
            value: int = (await response.json())["stock"]
            return value

        assert await stock() == 1

        cancelled = await gateway.post(f"/v1/orders/{order['id']}/cancel", headers=customer)
        assert cancelled.status == 200, await cancelled.text()
        assert (await cancelled.json())["status"] == "cancelled"

        async def stock_back() -> bool:
            return await stock() == 4

        async def released() -> bool:
            response = await gateway.get(f"/v1/orders/{order['id']}", headers=customer)
            return bool((await response.json())["stock_released"])

        # orders.order.cancelled → catalog releases → catalog.stock.released → orders.
        await eventually(stock_back, within=15)
        await eventually(released, within=15)

        mine = await gateway.get("/v1/orders", headers=customer)
        assert [o["id"] for o in (await mine.json())["items"]] == [order["id"]]
        stranger = await gateway.get(f"/v1/orders/{order['id']}", headers=admin)
        assert stranger.status == 200  # the admin sees every order
