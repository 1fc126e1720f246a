"""The auth error map (problem+json), and RFC 6749 answers for the token endpoint."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import JSONResponse, Response

from bazaar.auth.domain import errors
from bazaar.shared.errors import ErrorMap
from bazaar.shared.problem import ProblemSpec

ERROR_MAP: ErrorMap = {
    errors.EmailTaken: ProblemSpec(409, "conflict", "Conflict"),
    errors.UserNotFound: ProblemSpec(404, "not-found", "Not Found"),
    errors.NotAUser: ProblemSpec(403, "forbidden", "Forbidden"),
}

#: Token responses must never be cached (RFC 6749 §5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def oauth_error_response(_request: Request, exc: Exception) -> Response:
    """Render a token-endpoint error in RFC 6749 form, not as a problem."""
    assert isinstance(exc, errors.OAuthError)  # noqa: S101 - registered for this class only
    headers = dict(NO_STORE)
    if exc.status == 401:  # RFC 9110: every 401 carries a challenge
        headers["WWW-Authenticate"] = 'Basic realm="bazaar", charset="UTF-8"'
    return JSONResponse(
        {"error": exc.error, "error_description": str(exc) or None},
        status_code=exc.status,
        headers=headers,
    )
