"""The events the services really write to their outboxes conform to the AsyncAPI document.

Each test drives a real service app in-process, over its migrated database of this run,
through the flows that emit every one of its event types, then checks every row of the
service's outbox (the envelope and the data schema of its type) against
contracts/asyncapi/events.yaml.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from bazaar.auth.app import create_app as create_auth
from bazaar.auth.config import AuthSettings, ClientConfig
from bazaar.catalog.app import create_app as create_catalog
from bazaar.catalog.config import CatalogSettings
from bazaar.shared.auth import VerifierSettings
from bazaar.shared.testing.asgi import serve_in_process
from bazaar.shared.testing.server import free_port, serve_on_socket
from bazaar.shared.testing.tokens import TokenIssuer

Violations = Callable[[Any], list[str]]
TRACEPARENT = "00-{trace_id}-00f067aa0ba902b7-01"
ISSUER = "http://gateway.contracts.test"
ADMIN = ("admin@contracts.test", "contracts-admin-password")
ORDERS_SECRET = "contracts-orders-client-secret"
PASSWORD = "a long enough password"


async def outbox_rows(url: str) -> list[dict[str, Any]]:
    """Every row of a service's outbox, oldest first, with its event decoded."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT type, subject, traceparent, event::text AS event FROM outbox ORDER BY position"
        )
    finally:
        await conn.close()
    return [{**dict(r), "event": json.loads(r["event"])} for r in rows]


def nonconforming(rows: list[dict[str, Any]], violations: Violations) -> dict[str, list[str]]:
    """Per event id (or row), what is wrong with it: the document, and the row's own columns."""
    found: dict[str, list[str]] = {}
    for number, row in enumerate(rows):
        event = row["event"]
        problems = violations(event)
        if isinstance(event, dict):
            columns = {"type": row["type"], "subject": row["subject"]}
            if row["traceparent"] is not None:
                columns["traceparent"] = row["traceparent"]
            problems += [
                f"the row's {k} {v!r} is not the event's"
                for k, v in columns.items()
                if event.get(k) != v
            ]
        if problems:
            found[f"{row['type']} #{number}"] = problems
    return found


def documented_types(asyncapi_document: dict[str, Any], service: str) -> set[str]:
    """The event types the document says `service` sends."""
    return {
        channel["address"]
        for channel in asyncapi_document["channels"].values()
        if channel["address"].startswith(f"{service}.")
    }


def auth_settings(url: str) -> AuthSettings:
    """Auth over the run's system database, with a known admin and the orders client."""
    return AuthSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=url,
        jwt_issuer=ISSUER,
        admin_email=ADMIN[0],
        admin_password=SecretStr(ADMIN[1]),
        clients=(
            ClientConfig(
                client_id="orders", secret=SecretStr(ORDERS_SECRET), scopes=("catalog:reserve",)
            ),
        ),
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _password_token(auth: httpx.AsyncClient, email: str, password: str) -> str:
    response = await auth.post(
        "/v1/auth/token", data={"grant_type": "password", "username": email, "password": password}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _trace() -> tuple[str, dict[str, str]]:
    trace_id = uuid.uuid4().hex
    return trace_id, {"traceparent": TRACEPARENT.format(trace_id=trace_id)}


async def test_every_event_auth_writes_to_its_outbox_conforms_to_the_document(
    system_databases: dict[str, str],
    asyncapi_document: dict[str, Any],
    event_violations: Violations,
) -> None:
    settings = auth_settings(system_databases["auth"])
    trace_id, traced = _trace()
    async with serve_in_process(create_auth(settings), base_url="http://auth.test") as auth:
        registered = await auth.post(
            "/v1/users",
            json={
                "email": f"grace-{uuid.uuid4().hex[:8]}@contracts.test",
                "password": PASSWORD,
                "name": "Grace Hopper",
            },
            headers=traced,
        )
        assert registered.status_code == 201, registered.text

    rows = await outbox_rows(system_databases["auth"])

    assert nonconforming(rows, event_violations) == {}
    assert {r["type"] for r in rows} == documented_types(asyncapi_document, "auth")
    mine = [r["event"] for r in rows if r["subject"] == registered.json()["id"]]
    assert [e["traceparent"].split("-")[1] for e in mine] == [trace_id]


async def test_every_event_catalog_writes_to_its_outbox_conforms_to_the_document(
    system_databases: dict[str, str],
    verifier_settings: VerifierSettings,
    token_issuer: TokenIssuer,
    asyncapi_document: dict[str, Any],
    event_violations: Violations,
) -> None:
    settings = CatalogSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=system_databases["catalog"],
        jwt_jwks_url=verifier_settings.jwks_url,
        jwt_issuer=verifier_settings.issuer,
        jwt_audience=verifier_settings.audience,
    )
    writer = {"Authorization": f"Bearer {token_issuer.issue('admin-1', ['catalog:write'])}"}
    reserver = {"Authorization": f"Bearer {token_issuer.issue('orders', ['catalog:reserve'])}"}
    run = uuid.uuid4().hex[:8].upper()
    trace_id, traced = _trace()
    async with serve_in_process(create_catalog(settings), base_url="http://catalog.test") as api:

        async def create(
            sku: str, headers: dict[str, str] | None = None, **fields: Any
        ) -> httpx.Response:
            body = {"sku": f"{sku}-{run}", "name": sku.title(), "price_cents": 1250, **fields}
            response = await api.post(
                "/v1/products",
                json={"currency": "EUR", "stock": 10, **body},
                headers={**writer, **(headers or {})},
            )
            assert response.status_code == 201, response.text
            return response

        mug = await create("MUG", description="Holds 350 ml.", stock=40)
        tea = await create("TEA.EARL_GREY", headers=traced)
        gone = await create("GONE", price_cents=0, stock=0)

        patches = [
            (mug, {"description": None, "price_cents": 990}),
            (gone, {"name": "Renamed", "currency": "USD", "stock": 1_000_000}),
        ]
        for product, patch in patches:
            response = await api.patch(
                f"/v1/products/{product.json()['id']}",
                json=patch,
                headers={**writer, "If-Match": product.headers["ETag"]},
            )
            assert response.status_code == 200, response.text
        deleted = await api.delete(f"/v1/products/{gone.json()['id']}", headers=writer)
        assert deleted.status_code == 204, deleted.text

        reserved = await api.post(
            "/v1/reservations",
            json={
                "order_id": str(uuid.uuid4()),
                "lines": [
                    {"product_id": mug.json()["id"], "quantity": 2},
                    {"product_id": tea.json()["id"], "quantity": 1},
                ],
            },
            headers={**reserver, **traced, "Idempotency-Key": f"contracts-{run}"},
        )
        assert reserved.status_code == 201, reserved.text
        released = await api.delete(f"/v1/reservations/{reserved.json()['id']}", headers=reserver)
        assert released.status_code == 204, released.text

    rows = await outbox_rows(system_databases["catalog"])

    assert nonconforming(rows, event_violations) == {}
    assert {r["type"] for r in rows} == documented_types(asyncapi_document, "catalog")
    updates = [r["event"]["data"] for r in rows if r["type"] == "catalog.product.updated"]
    assert {"description", "price_cents"} in [set(u["changed"]) for u in updates]
    traced_types = {r["type"] for r in rows if trace_id in (r["event"].get("traceparent") or "")}
    assert traced_types == {"catalog.product.created", "catalog.stock.reserved"}


async def test_every_event_orders_writes_to_its_outbox_conforms_to_the_document(
    system_databases: dict[str, str],
    orders_database_url: str,
    asyncapi_document: dict[str, Any],
    event_violations: Violations,
) -> None:
    create_orders = pytest.importorskip("bazaar.orders.app").create_app
    orders_config = pytest.importorskip("bazaar.orders.config")

    run = uuid.uuid4().hex[:8]
    async with (
        serve_on_socket(create_auth(auth_settings(system_databases["auth"]))) as auth_url,
        httpx.AsyncClient(base_url=auth_url) as auth,
    ):
        jwks = {"jwt_jwks_url": f"{auth_url}/.well-known/jwks.json", "jwt_issuer": ISSUER}
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
                client_secret=SecretStr(ORDERS_SECRET),
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
            admin = await _password_token(auth, *ADMIN)
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
            trace_id, traced = _trace()

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

    rows = await outbox_rows(orders_database_url)

    assert nonconforming(rows, event_violations) == {}
    assert {r["type"] for r in rows} == documented_types(asyncapi_document, "orders")
    reservations = {
        r["subject"]: r["event"]["data"]["reservation_id"]
        for r in rows
        if r["type"] == "orders.order.cancelled"
    }
    assert reservations[pending.json()["id"]] is None
    assert reservations[confirmed.json()["id"]] is not None
    placed = [r["event"] for r in rows if r["type"] == "orders.order.placed"]
    assert trace_id in placed[-1]["traceparent"]
