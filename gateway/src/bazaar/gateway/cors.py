"""CORS from configuration: allowed origins get the headers; the gateway answers preflights."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from bazaar.gateway.errors import GatewayError

ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOWED_HEADERS = (
    "authorization, content-type, idempotency-key, if-match, if-none-match, "
    "x-request-id, traceparent, tracestate"
)
EXPOSED_HEADERS = (
    "Location, ETag, Link, Retry-After, RateLimit, RateLimit-Policy, X-Request-ID, "
    "X-Trace-Id, Idempotent-Replayed, Deprecation, Sunset"
)
PREFLIGHT_MAX_AGE = "600"


class OriginNotAllowed(GatewayError):
    """A preflight from an origin that is not configured."""

    status, slug, title = 403, "forbidden", "Forbidden"


class Cors:
    """The configured origins (exact match; `*` allows any origin, without credentials)."""

    def __init__(self, origins: Sequence[str]) -> None:
        self._origins = frozenset(origins)
        self._any = "*" in self._origins

    def _allows(self, origin: str | None) -> bool:
        return origin is not None and (self._any or origin in self._origins)

    def headers(self, origin: str | None) -> dict[str, str]:
        """The CORS headers of an answer to this origin (none for other origins)."""
        if not self._origins:
            return {}
        if not self._allows(origin):
            return {"Vary": "Origin"}
        assert origin is not None
        return {
            "Access-Control-Allow-Origin": "*" if self._any else origin,
            "Access-Control-Expose-Headers": EXPOSED_HEADERS,
            "Vary": "Origin",
        }

    def is_preflight(self, request: web.Request) -> bool:
        """An OPTIONS request asking whether a cross-origin request may be made."""
        return (
            bool(self._origins)
            and request.method == "OPTIONS"
            and "Origin" in request.headers
            and "Access-Control-Request-Method" in request.headers
        )

    def preflight(self, request: web.Request, headers: dict[str, str]) -> web.Response:
        """Answer a preflight here (it carries no token, so it must not reach auth checks)."""
        if not self._allows(request.headers.get("Origin")):
            raise OriginNotAllowed("This origin may not call the API.")
        return web.Response(
            status=204,
            headers={
                **headers,
                "Access-Control-Allow-Methods": ALLOWED_METHODS,
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
            },
        )
