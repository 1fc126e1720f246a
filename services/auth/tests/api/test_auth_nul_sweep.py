"""Hostile text: a NUL in any string auth takes is refused, never a 500.

Every operation answers 422 naming the place, except the token and revocation endpoints,
which answer in RFC 6749 form (400 `invalid_request`).
"""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from bazaar.shared.testing.nulsweep import Probe, is_named_422, misanswered, nul_probes, sweep

#: Form endpoints (RFC 6749/7009): their errors are OAuth errors, not problems.
OAUTH_FORMS = frozenset({"/v1/auth/token", "/v1/auth/revoke"})


async def test_a_nul_in_any_string_of_any_operation_is_refused_naming_it(
    client: httpx.AsyncClient, auth_app: FastAPI, admin_headers: dict[str, str]
) -> None:
    document = auth_app.openapi()

    answers = await sweep(client, document, admin_headers)

    assert len(answers) == len(nul_probes(document)) >= 10
    wrong = misanswered(answers, expected=_refused)
    assert not wrong, "\n".join(wrong)


def _refused(probe: Probe, response: httpx.Response) -> bool:
    if probe.path in OAUTH_FORMS:
        return response.status_code == 400 and response.json().get("error") == "invalid_request"
    return is_named_422(probe, response)
