"""The committed OpenAPI document is the orders's public contract: it must not drift."""

from __future__ import annotations

from pathlib import Path

from bazaar.orders.app import create_app
from bazaar.orders.config import OrdersSettings
from bazaar.shared.testing.contracts import openapi_drift

CONTRACT = Path(__file__).resolve().parents[3] / "contracts" / "openapi" / "orders.json"


def test_the_app_document_equals_the_committed_contract() -> None:
    app = create_app(OrdersSettings(_env_file=None, version="0.1.0"))  # type: ignore[call-arg]
    drift = openapi_drift(app, CONTRACT)
    assert drift is None, f"OpenAPI drift; run `make contracts` and review:\n{drift}"


def test_the_contract_documents_every_public_orders_route() -> None:
    document = create_app(OrdersSettings(_env_file=None)).openapi()  # type: ignore[call-arg]
    paths = document["paths"]
    assert set(paths["/v1/orders"]) == {"get", "post"}
    assert set(paths["/v1/orders/{order_id}"]) == {"get"}
    assert set(paths["/v1/orders/{order_id}/cancel"]) == {"post"}
    assert {"201", "202", "400", "409", "422"} <= set(paths["/v1/orders"]["post"]["responses"])
    assert "bearerAuth" in document["components"]["securitySchemes"]


def test_cancel_documents_either_scope_as_alternative_requirements() -> None:
    document = create_app(OrdersSettings(_env_file=None)).openapi()  # type: ignore[call-arg]
    cancel = document["paths"]["/v1/orders/{order_id}/cancel"]["post"]
    # OpenAPI: the requirements of one list entry all apply; the entries are alternatives.
    assert cancel["security"] == [
        {"bearerAuth": ["orders:write"]},
        {"bearerAuth": ["orders:admin"]},
    ]
    place = document["paths"]["/v1/orders"]["post"]
    assert place["security"] == [{"bearerAuth": ["orders:write"]}]
