"""The gateway's own answers: RFC 9457 problems, one table from failure to status."""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

from bazaar.shared.problem import PROBLEM_CONTENT_TYPE, Problem


class GatewayError(Exception):
    """A failure the gateway answers itself."""

    status = 500
    slug = "internal-error"
    title = "Internal Server Error"

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})


class NotRouted(GatewayError):
    """No route serves this path (internal paths included)."""

    status, slug, title = 404, "not-found", "Not Found"


class PayloadTooLarge(GatewayError):
    """The request body exceeds the configured limit."""

    status, slug, title = 413, "payload-too-large", "Payload Too Large"


class RateLimited(GatewayError):
    """A rate-limit policy is exhausted for this client."""

    status, slug, title = 429, "rate-limited", "Too Many Requests"


class BadGateway(GatewayError):
    """The upstream refused or reset the connection."""

    status, slug, title = 502, "bad-gateway", "Bad Gateway"


class UpstreamUnavailable(GatewayError):
    """The upstream's breaker is open, or it is saturated."""

    status, slug, title = 503, "upstream-unavailable", "Upstream Unavailable"


class UpstreamTimeout(GatewayError):
    """The upstream did not answer in time."""

    status, slug, title = 504, "upstream-timeout", "Upstream Timeout"


class Unauthorized(GatewayError):
    """The route needs a valid token."""

    status, slug, title = 401, "unauthorized", "Unauthorized"


class Forbidden(GatewayError):
    """The token lacks the route's scope."""

    status, slug, title = 403, "forbidden", "Forbidden"


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    instance: str,
    trace_id: str,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A problem+json response."""
    body = Problem(status, slug, title, detail, instance=instance, trace_id=trace_id).to_dict()
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type=PROBLEM_CONTENT_TYPE.split(";")[0],
        headers=dict(headers or {}),
    )


def error_response(exc: GatewayError, *, instance: str, trace_id: str) -> web.Response:
    """The problem answer of a gateway failure."""
    return problem(
        exc.status,
        exc.slug,
        exc.title,
        exc.detail,
        instance=instance,
        trace_id=trace_id,
        headers=exc.headers,
    )
