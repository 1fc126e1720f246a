"""The events orders really writes to its outbox conform to the AsyncAPI document.

Auth and catalog run on real sockets (orders calls them with its aiohttp client), orders
in-process twice: once with catalog reachable, once with catalog cut off (orders stay pending).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from bazaar.auth.app import create_app as create_auth
from bazaar.auth.config import AuthSettings
from bazaar.catalog.app import create_app as create_catalog
from bazaar.catalog.config import CatalogSettings
from bazaar.shared.testing.asgi import serve_in_process
from bazaar.shared.testing.server import free_port, serve_on_socket

Outbox = Callable[[str], Awaitable[Any]]
Trace = Callable[[], tuple[str, dict[str, str]]]
PASSWORD = "a long enough password"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _password_token(auth: httpx.AsyncClient, email: str, password: str) -> str:
    response = await auth.post(
        "/v1/auth/token", data={"grant_type": "password", "username": email, "password": password}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def test_every_event_orders_writes_to_its_outbox_conforms_to_the_document(
    system_databases: dict[str, str],
    orders_database_url: str,
    contracts_auth_settings: AuthSettings,
    event_contract: Any,
    outbox_of: Outbox,
    new_trace: Trace,
) -> None:
    create_orders = pytest.importorskip("bazaar.orders.app").create_app
    orders_config = pytest.importorskip("bazaar.orders.config")

    run = uuid.uuid4().hex[:8]
    async with (
        serve_on_socket(create_auth(contracts_auth_settings)) as auth_url,
        httpx.AsyncClient(base_url=auth_url) as auth,
    ):
        jwks = {
            "jwt_jwks_url": f"{auth_url}/.well-known/jwks.json",
            "jwt_issuer": contracts_auth_settings.jwt_issuer,
        }
        catalog_settings = CatalogSettings(
            _env_file=None,  # type: ignore[call-arg]
            environment="test",
            database_url=system_databases["catalog"],
            **jwks,
        )

        def orders_settings(catalog_url: str) -> Any:
            return orders_config.OrdersSettings(
                _env_file=None,  # type: ignore[call-arg]
                environment="test",
                database_url=orders_database_url,
                catalog_url=catalog_url,
                auth_url=auth_url,
                client_id="orders",
                client_secret=contracts_auth_settings.clients[0].secret,
                catalog_attempts=1,
                catalog_deadline_seconds=1.0,
                **jwks,
            )

        async with (
            serve_on_socket(create_catalog(catalog_settings)) as catalog_url,
            httpx.AsyncClient(base_url=catalog_url) as catalog,
            serve_in_process(create_orders(orders_settings(catalog_url))) as orders,
            # The same service with catalog unreachable: its orders stay pending.
            serve_in_process(
                create_orders(orders_settings(f"http://127.0.0.1:{free_port()}"))
            ) as cut_off,
        ):
            admin = await _password_token(
                auth,
                contracts_auth_settings.admin_email,
                contracts_auth_settings.admin_password.get_secret_value(),
            )
            product = await catalog.post(
                "/v1/products",
                json={"sku": f"ORD-{run}", "name": "Kettle", "price_cents": 3999,
                      "currency": "EUR", "stock": 5},
                headers=_bearer(admin),
            )  # fmt: skip
            assert product.status_code == 201, product.text
            email = f"ordering-{run}@contracts.test"
            registered = await auth.post(
                "/v1/users", json={"email": email, "password": PASSWORD, "name": "Orderer"}
            )
            assert registered.status_code == 201, registered.text
            customer = _bearer(await _password_token(auth, email, PASSWORD))
            trace_id, traced = new_trace()

            async def place(app: httpx.AsyncClient, quantity: int, key: str) -> httpx.Response:
                lines = [{"product_id": product.json()["id"], "quantity": quantity}]
                return await app.post(
                    "/v1/orders",
                    json={"lines": lines},
                    headers={**customer, **traced, "Idempotency-Key": f"{key}-{run}"},
                )

            confirmed = await place(orders, 2, "confirmed")
            rejected = await place(orders, 100, "rejected")
            pending = await place(cut_off, 1, "pending")
            assert [confirmed.status_code, rejected.status_code, pending.status_code] == [
                201, 409, 202,
            ]  # fmt: skip
            for order in (confirmed, pending):
                cancelled = await orders.post(
                    f"/v1/orders/{order.json()['id']}/cancel", headers=customer
                )
                assert cancelled.status_code == 200, cancelled.text

    outbox = await outbox_of(orders_database_url)

    assert outbox.problems == {}
    assert outbox.types == event_contract.sent_by("orders")
    reservations = {
        e["subject"]: e["data"]["reservation_id"] for e in outbox.events("orders.order.cancelled")
    }
    assert reservations[pending.json()["id"]] is None
    assert reservations[confirmed.json()["id"]] is not None
    (placed,) = outbox.events("orders.order.placed")
    assert placed["subject"] == confirmed.json()["id"]
    assert placed["traceparent"].split("-")[1] == trace_id
