"""Hostile text: a NUL in any string orders takes is a 422 naming where, never a 500."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from bazaar.shared.testing.nulsweep import EVERY_SCOPE, misanswered, nul_probes, sweep
from bazaar.shared.testing.tokens import TokenIssuer


async def test_a_nul_in_the_admin_customer_filter_is_a_422_naming_the_parameter(
    client: httpx.AsyncClient, token_issuer: TokenIssuer
) -> None:
    admin = {"Authorization": f"Bearer {token_issuer.issue('admin-1', EVERY_SCOPE)}"}

    response = await client.get("/v1/orders?customer_id=a%00b", headers=admin)

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["type"].endswith("/validation-error")
    assert ["query", "customer_id"] in [error["loc"] for error in body["errors"]]


async def test_a_nul_in_any_string_of_any_operation_is_a_422_naming_it(
    client: httpx.AsyncClient, orders_app: FastAPI, token_issuer: TokenIssuer
) -> None:
    document = orders_app.openapi()
    bearer = {"Authorization": f"Bearer {token_issuer.issue('sweeper', EVERY_SCOPE)}"}

    answers = await sweep(client, document, bearer)

    assert len(answers) == len(nul_probes(document)) >= 7
    wrong = misanswered(answers)
    assert not wrong, "\n".join(wrong)
