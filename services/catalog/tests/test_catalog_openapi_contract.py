"""The committed OpenAPI document is the catalog's public contract: it must not drift."""

from __future__ import annotations

from pathlib import Path

from bazaar.catalog.app import create_app
from bazaar.catalog.config import CatalogSettings
from bazaar.shared.testing.contracts import openapi_drift

CONTRACT = Path(__file__).resolve().parents[3] / "contracts" / "openapi" / "catalog.json"


def test_the_app_document_equals_the_committed_contract() -> None:
    app = create_app(CatalogSettings(_env_file=None, version="0.1.0"))  # type: ignore[call-arg]
    drift = openapi_drift(app, CONTRACT)
    assert drift is None, f"OpenAPI drift; run `make contracts` and review:\n{drift}"


def test_the_contract_documents_every_public_catalog_route() -> None:
    document = create_app(CatalogSettings(_env_file=None)).openapi()  # type: ignore[call-arg]
    paths = document["paths"]
    assert set(paths["/v1/products"]) == {"get", "post"}
    assert set(paths["/v1/products/{product_id}"]) == {"get", "patch", "delete"}
    assert "post" in paths["/v1/reservations"]
    assert "bearerAuth" in document["components"]["securitySchemes"]
