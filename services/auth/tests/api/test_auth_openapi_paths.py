"""The auth OpenAPI document: the token endpoints take forms; the users paths are there."""

from __future__ import annotations

from typing import Any

import pytest

from bazaar.auth.app import create_app
from bazaar.auth.config import AuthSettings

FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    settings = AuthSettings(_env_file=None, environment="test")  # type: ignore[call-arg]
    return create_app(settings).openapi()


@pytest.mark.parametrize("path", ["/v1/auth/token", "/v1/auth/revoke"])
def test_the_token_endpoints_take_a_form_body_and_no_json(
    document: dict[str, Any], path: str
) -> None:
    operation = document["paths"][path]["post"]

    content = operation["requestBody"]["content"]
    assert set(content) == {FORM}
    assert operation["requestBody"]["required"] is True


def test_the_token_form_names_every_parameter_of_the_three_grants(
    document: dict[str, Any],
) -> None:
    schema = document["paths"]["/v1/auth/token"]["post"]["requestBody"]["content"][FORM]["schema"]

    assert set(schema["properties"]) >= {
        "grant_type",
        "username",
        "password",
        "refresh_token",
        "scope",
        "client_id",
        "client_secret",
    }


def test_the_token_endpoint_documents_its_answers(document: dict[str, Any]) -> None:
    responses = document["paths"]["/v1/auth/token"]["post"]["responses"]

    assert {"200", "400", "401"} <= set(responses)


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/v1/users", "post"),
        ("/v1/users", "get"),
        ("/v1/users/me", "get"),
        ("/v1/users/{user_id}", "patch"),
        ("/.well-known/jwks.json", "get"),
        ("/.well-known/openid-configuration", "get"),
    ],
)
def test_every_auth_path_is_documented(document: dict[str, Any], path: str, method: str) -> None:
    assert method in document["paths"][path]


def test_registration_documents_a_json_body_201_409_and_422(document: dict[str, Any]) -> None:
    operation = document["paths"]["/v1/users"]["post"]

    assert "application/json" in operation["requestBody"]["content"]
    assert {"201", "409", "422"} <= set(operation["responses"])


def test_no_documented_user_shape_exposes_a_password(document: dict[str, Any]) -> None:
    user_read = document["components"]["schemas"]["UserRead"]

    assert set(user_read["properties"]) == {"id", "email", "name", "roles", "created_at"}


@pytest.mark.parametrize(
    ("path", "method"),
    [("/v1/users/me", "get"), ("/v1/users", "get"), ("/v1/users/{user_id}", "patch")],
)
def test_the_protected_operations_declare_bearer_security(
    document: dict[str, Any], path: str, method: str
) -> None:
    security = document["paths"][path][method].get("security", [])

    assert any("bearerAuth" in requirement for requirement in security), security


@pytest.mark.parametrize(
    ("path", "method"),
    [("/v1/users", "post"), ("/v1/auth/token", "post"), ("/v1/auth/revoke", "post")],
)
def test_the_public_operations_declare_no_bearer_security(
    document: dict[str, Any], path: str, method: str
) -> None:
    security = document["paths"][path][method].get("security", [])

    assert not any("bearerAuth" in requirement for requirement in security), security
