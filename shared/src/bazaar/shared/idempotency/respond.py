"""Answer an unsafe request once: inside a transaction, through the store when a key was sent."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.responses import Response

from bazaar.shared.db import Database
from bazaar.shared.idempotency.http import outcome_response, problem_response_for, request_scope
from bazaar.shared.idempotency.models import ClaimWith, Outcome, request_fingerprint
from bazaar.shared.idempotency.store import IdempotencyStore, Operation, Prepare


async def respond_once(
    request: Request,
    *,
    operation: Operation,
    db: Database,
    store: IdempotencyStore,
    key: str | None,
    principal: str,
    body: Any,
    prepare: Prepare | None = None,
    claim_with: ClaimWith | None = None,
) -> Response:
    """Run `operation` in one transaction; with a key, at most once per key (replays after).

    `prepare` runs first, outside any transaction (see `Prepare`); with a key, `claim_with`
    writes a first effect in the claim's own statement (see `ClaimWith`).
    """
    if key is None:
        if prepare is not None:
            await prepare()
        async with db.transaction() as conn:
            stored = await operation(conn)
        return outcome_response(Outcome(stored, replayed=False))
    outcome = await store.run(
        key=key,
        scope=request_scope(request, principal),
        # The concrete path is part of the request: one key reused for another resource
        # (cancel order A, then order B) is a mismatch, never A's answer replayed for B.
        fingerprint=request_fingerprint({"path": request.url.path, "body": body}),
        operation=operation,
        store_error=problem_response_for(request),
        prepare=prepare,
        claim_with=claim_with,
    )
    return outcome_response(outcome)
