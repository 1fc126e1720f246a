"""The FastAPI dependencies: who gets in, who is turned away, and with which challenge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from bazaar.shared.auth import (
    Caller,
    Principal,
    TokenVerifier,
    VerifierSettings,
    require_any_scope,
    require_scopes,
)
from bazaar.shared.problem import PROBLEM_CONTENT_TYPE, ProblemError, problem_from_exception
from bazaar.shared.testing.tokens import TokenIssuer


def make_app(verifier: TokenVerifier) -> FastAPI:
    app = FastAPI()
    app.state.token_verifier = verifier

    # Stands in for the real app factory's handler: a ProblemError, its status and headers.
    @app.exception_handler(ProblemError)
    async def render_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        problem = problem_from_exception(exc, {})
        assert problem is not None
        return JSONResponse(
            problem.to_dict(),
            status_code=problem.status,
            headers=exc.headers,
            media_type=PROBLEM_CONTENT_TYPE,
        )

    @app.get("/me")
    async def me(caller: Caller) -> dict[str, str]:
        """Show the caller."""
        return {"subject": caller.subject}

    @app.post("/products")
    async def create_product(
        caller: Annotated[Principal, Depends(require_scopes("catalog:read", "catalog:write"))],
    ) -> dict[str, str]:
        """Create a product."""
        return {"subject": caller.subject}

    @app.post("/orders/cancel")
    async def cancel(
        caller: Annotated[Principal, Depends(require_any_scope("orders:write", "orders:admin"))],
    ) -> dict[str, str]:
        """Cancel an order."""
        return {"subject": caller.subject}

    return app


@pytest.fixture
async def client(verifier_settings: VerifierSettings) -> AsyncIterator[httpx.AsyncClient]:
    verifier = TokenVerifier(verifier_settings)
    transport = httpx.ASGITransport(app=make_app(verifier))
    async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as client:
        yield client
    await verifier.aclose()


def bearer(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


async def test_a_request_without_a_token_answers_401_with_a_bare_bearer_challenge(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/me")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.headers["Content-Type"] == PROBLEM_CONTENT_TYPE
    assert response.json()["type"].endswith("/unauthorized")


@pytest.mark.parametrize(
    "authorization", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Token abc", "bearer"]
)
async def test_a_header_without_a_bearer_token_answers_401_with_a_bare_challenge(
    client: httpx.AsyncClient, authorization: str
) -> None:
    response = await client.get("/me", headers={"Authorization": authorization})

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_a_bad_token_answers_401_with_invalid_token(
    client: httpx.AsyncClient, token_issuer: TokenIssuer
) -> None:
    response = await client.get("/me", headers=bearer(token_issuer.unsigned()))

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert response.json()["detail"] == "The token's algorithm is not allowed."


async def test_a_valid_token_reaches_a_route_for_any_caller(
    client: httpx.AsyncClient, token_issuer: TokenIssuer
) -> None:
    response = await client.get("/me", headers=bearer(token_issuer.issue("user-7", [])))

    assert response.status_code == 200
    assert response.json() == {"subject": "user-7"}


async def test_the_bearer_scheme_is_case_insensitive(
    client: httpx.AsyncClient, token_issuer: TokenIssuer
) -> None:
    response = await client.get("/me", headers=bearer(token_issuer.issue(), scheme="bEaReR"))

    assert response.status_code == 200


async def test_a_valid_token_lacking_the_scope_answers_403_with_insufficient_scope(
    client: httpx.AsyncClient, token_issuer: TokenIssuer
) -> None:
    token = token_issuer.issue(scopes=["catalog:read", "orders:write"])

    response = await client.post("/products", headers=bearer(token))

    assert response.status_code == 403
    assert response.json()["type"].endswith("/forbidden")
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="catalog:read catalog:write"'
    )


async def test_a_valid_token_with_the_scopes_reaches_the_route(
    client: httpx.AsyncClient, token_issuer: TokenIssuer
) -> None:
    token = token_issuer.issue("admin-1", ["catalog:read", "catalog:write"], key="ec")

    response = await client.post("/products", headers=bearer(token))

    assert response.status_code == 200
    assert response.json() == {"subject": "admin-1"}


async def test_a_scoped_route_without_a_token_answers_401_not_403(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/products")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_the_openapi_document_declares_the_bearer_scheme_on_protected_routes(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()

    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    assert scheme["bearerFormat"] == "JWT"
    assert document["paths"]["/me"]["get"]["security"] == [{"bearerAuth": []}]
    assert {"bearerAuth": ["catalog:read", "catalog:write"]} in (
        document["paths"]["/products"]["post"]["security"]
    )


@pytest.mark.parametrize("scopes", [["orders:write"], ["orders:admin"], ["orders:write", "x"]])
async def test_any_one_of_the_scopes_lets_the_caller_in(
    client: httpx.AsyncClient, token_issuer: TokenIssuer, scopes: list[str]
) -> None:
    response = await client.post("/orders/cancel", headers=bearer(token_issuer.issue("u", scopes)))
    assert response.status_code == 200


async def test_none_of_the_scopes_is_403_insufficient_scope(
    client: httpx.AsyncClient, token_issuer: TokenIssuer
) -> None:
    token = token_issuer.issue("u", ["orders:read"])
    response = await client.post("/orders/cancel", headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["type"].endswith("/forbidden")
    assert response.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", scope="orders:write"'
    )


async def test_any_scope_still_needs_a_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/orders/cancel")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
