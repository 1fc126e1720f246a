"""Hostile text: a NUL in any string catalog takes is a 422 naming where, never a 500."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from bazaar.shared.testing.nulsweep import EVERY_SCOPE, misanswered, nul_probes, sweep
from bazaar.shared.testing.tokens import TokenIssuer


async def test_a_nul_in_any_string_of_any_operation_is_a_422_naming_it(
    client: httpx.AsyncClient, catalog_app: FastAPI, token_issuer: TokenIssuer
) -> None:
    document = catalog_app.openapi()
    bearer = {"Authorization": f"Bearer {token_issuer.issue('sweeper', EVERY_SCOPE)}"}

    answers = await sweep(client, document, bearer)

    assert len(answers) == len(nul_probes(document)) >= 15
    wrong = misanswered(answers)
    assert not wrong, "\n".join(wrong)
