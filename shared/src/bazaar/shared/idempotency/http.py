"""FastAPI glue: the `Idempotency-Key` header, error answers worth keeping, replayed responses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.responses import JSONResponse, Response

from bazaar.shared.idempotency.errors import (
    IDEMPOTENCY_KEY_HEADER,
    IdempotencyKeyMissing,
    validate_idempotency_key,
)
from bazaar.shared.idempotency.models import IdempotencyScope, Outcome, StoredResponse
from bazaar.shared.problem import PROBLEM_CONTENT_TYPE, ProblemError, problem_from_exception
from bazaar.shared.tracecontext import current_trace_id

REPLAYED_HEADER = "Idempotent-Replayed"
_BODYLESS_STATUSES = frozenset({204, 304})


def idempotency_key_header(required: bool) -> Callable[..., Awaitable[str | None]]:
    """A dependency reading `Idempotency-Key`: missing and required is 400, invalid is 422.

    The header is declared optional to FastAPI either way, so a missing key is answered with
    our 400 `idempotency-key-missing` rather than the framework's 422.
    """
    # Declared as a default, not in an annotation: with postponed annotations FastAPI could
    # not resolve a closure variable inside `Annotated[...]`.
    header = Header(
        None,
        alias=IDEMPOTENCY_KEY_HEADER,
        description=("Required. " if required else "")
        + "A unique key (1-255 visible ASCII characters) that makes retries safe.",
    )

    async def idempotency_key(
        value: str | None = header,
    ) -> str | None:
        if value is None:
            if required:
                raise IdempotencyKeyMissing()
            return None
        return validate_idempotency_key(value)

    return idempotency_key


RequiredIdempotencyKey = Annotated[str, Depends(idempotency_key_header(required=True))]
OptionalIdempotencyKey = Annotated[str | None, Depends(idempotency_key_header(required=False))]


def request_scope(request: Request, principal: str) -> IdempotencyScope:
    """The scope of this request: the principal, its method and its route TEMPLATE."""
    route = request.scope.get("route")
    template = getattr(route, "path", None) or request.url.path
    return IdempotencyScope(principal=principal, method=request.method, route=template)


def problem_response_for(request: Request) -> Callable[[Exception], StoredResponse | None]:
    """A `store_error` that keeps 4xx problem answers (as rendered) and nothing else."""

    def store_error(exc: Exception) -> StoredResponse | None:
        problem = problem_from_exception(exc, getattr(request.app.state, "error_map", {}))
        if problem is None or not 400 <= problem.status < 500:
            return None
        problem.trace_id = current_trace_id()
        problem.instance = request.url.path
        headers = dict(exc.headers) if isinstance(exc, ProblemError) else {}
        headers["content-type"] = PROBLEM_CONTENT_TYPE
        return StoredResponse(status=problem.status, body=problem.to_dict(), headers=headers)

    return store_error


def outcome_response(outcome: Outcome) -> Response:
    """Render an outcome; a replay carries `Idempotent-Replayed: true`."""
    stored = outcome.response
    headers: dict[str, str] = {}
    media_type: str | None = None
    for name, value in stored.headers.items():
        if name.lower() == "content-type":
            media_type = value
        else:
            headers[name] = value
    if outcome.replayed:
        headers[REPLAYED_HEADER] = "true"
    if stored.status in _BODYLESS_STATUSES or stored.status < 200:
        return Response(status_code=stored.status, headers=headers)
    return JSONResponse(
        stored.body, status_code=stored.status, headers=headers, media_type=media_type
    )
