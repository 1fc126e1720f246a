"""The catalog's OpenAPI document: its paths, methods and the bearer security scheme."""

from __future__ import annotations

from typing import Any

import pytest

from bazaar.catalog.app import create_app
from bazaar.catalog.config import CatalogSettings


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    settings = CatalogSettings(_env_file=None, environment="test")  # type: ignore[call-arg]
    return create_app(settings).openapi()


def test_the_document_lists_every_catalog_path_and_method(document: dict[str, Any]) -> None:
    paths = document["paths"]

    assert set(paths["/v1/products"]) >= {"get", "post"}
    assert set(paths["/v1/products/{product_id}"]) >= {"get", "patch", "delete"}
    assert set(paths["/v1/reservations"]) >= {"post"}
    assert set(paths["/v1/reservations/{reservation_id}"]) >= {"get", "delete"}


def test_the_document_declares_a_bearer_jwt_security_scheme(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["bearerAuth"]

    assert scheme["type"] == "http"
    assert scheme["scheme"].lower() == "bearer"


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/v1/products", "post"),
        ("/v1/products/{product_id}", "patch"),
        ("/v1/products/{product_id}", "delete"),
        ("/v1/reservations", "post"),
        ("/v1/reservations/{reservation_id}", "get"),
        ("/v1/reservations/{reservation_id}", "delete"),
    ],
)
def test_protected_operations_require_the_bearer_scheme(
    document: dict[str, Any], path: str, method: str
) -> None:
    security = document["paths"][path][method].get("security", [])

    assert any("bearerAuth" in requirement for requirement in security)


@pytest.mark.parametrize(
    ("path", "method"), [("/v1/products", "get"), ("/v1/products/{product_id}", "get")]
)
def test_public_reads_require_no_token(document: dict[str, Any], path: str, method: str) -> None:
    assert not document["paths"][path][method].get("security")


def test_the_patch_body_is_a_json_merge_patch(document: dict[str, Any]) -> None:
    content = document["paths"]["/v1/products/{product_id}"]["patch"]["requestBody"]["content"]

    assert "application/merge-patch+json" in content
