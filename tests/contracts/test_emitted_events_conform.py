"""The events the services really write to their outboxes conform to the AsyncAPI document.

Each test drives a real service app in-process, over its migrated database of this run,
through the flows that emit every one of its event types, then checks every row of the
service's outbox (the envelope and the data schema of its type) against
contracts/asyncapi/events.yaml. Orders has its own module (test_orders_events_conform.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bazaar.auth.app import create_app as create_auth
from bazaar.auth.config import AuthSettings
from bazaar.catalog.app import create_app as create_catalog
from bazaar.catalog.config import CatalogSettings
from bazaar.shared.auth import VerifierSettings
from bazaar.shared.testing.asgi import serve_in_process
from bazaar.shared.testing.tokens import TokenIssuer

Outbox = Callable[[str], Awaitable[Any]]
Trace = Callable[[], tuple[str, dict[str, str]]]


async def test_every_event_auth_writes_to_its_outbox_conforms_to_the_document(
    contracts_auth_settings: AuthSettings,
    event_contract: Any,
    outbox_of: Outbox,
    new_trace: Trace,
) -> None:
    trace_id, traced = new_trace()
    app = create_auth(contracts_auth_settings)
    async with serve_in_process(app, base_url="http://auth.test") as auth:
        registered = await auth.post(
            "/v1/users",
            json={
                "email": f"grace-{uuid.uuid4().hex[:8]}@contracts.test",
                "password": "a long enough password",
                "name": "Grace Hopper",
            },
            headers=traced,
        )
        assert registered.status_code == 201, registered.text

    outbox = await outbox_of(contracts_auth_settings.dsn())

    assert outbox.problems == {}
    assert outbox.types == event_contract.sent_by("auth")
    mine = [
        e for e in outbox.events("auth.user.registered") if e["subject"] == registered.json()["id"]
    ]
    assert [e["traceparent"].split("-")[1] for e in mine] == [trace_id]


async def test_every_event_catalog_writes_to_its_outbox_conforms_to_the_document(
    system_databases: dict[str, str],
    verifier_settings: VerifierSettings,
    token_issuer: TokenIssuer,
    event_contract: Any,
    outbox_of: Outbox,
    new_trace: Trace,
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
    trace_id, traced = new_trace()
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

    outbox = await outbox_of(settings.dsn())

    assert outbox.problems == {}
    assert outbox.types == event_contract.sent_by("catalog")
    updates = [e["data"] for e in outbox.events("catalog.product.updated")]
    assert {"description", "price_cents"} in [set(u["changed"]) for u in updates]
    traced_types = {
        r["type"] for r in outbox.rows if trace_id in (r["event"].get("traceparent") or "")
    }
    assert traced_types == {"catalog.product.created", "catalog.stock.reserved"}
