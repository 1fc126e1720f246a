"""The gateway's own answers: RFC 9457 problems built from the shared ProblemError classes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from bazaar.shared.problem import (
    PROBLEM_CONTENT_TYPE,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Problem,
    ProblemError,
    ServiceUnavailable,
    Unauthorized,
)

#: Every failure the gateway answers itself is a ProblemError (the shared error type).
GatewayError = ProblemError

__all__ = [
    "BadGateway",
    "BodyBudgetExhausted",
    "ClientClosedRequest",
    "Forbidden",
    "GatewayError",
    "NotRouted",
    "PayloadTooLarge",
    "RateLimited",
    "RequestTimeout",
    "Unauthorized",
    "UpstreamFailed",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "error_response",
    "problem",
]


class NotRouted(NotFound):
    """No route serves this path (internal paths included)."""


class RequestTimeout(ProblemError):
    """The client did not send its whole body in time."""

    status, slug, title = 408, "request-timeout", "Request Timeout"


class ClientClosedRequest(ProblemError):
    """The client went away before its body was in: nobody reads the answer (nginx's 499,
    for the access log and metrics)."""

    status, slug, title = 499, "client-closed-request", "Client Closed Request"


class BodyBudgetExhausted(ServiceUnavailable):
    """The gateway holds as many request bodies as its budget allows: retry shortly."""


class RateLimited(ProblemError):
    """A rate-limit policy is exhausted for this client."""

    status, slug, title = 429, "rate-limited", "Too Many Requests"


class BadGateway(ProblemError):
    """The upstream refused or reset the connection, answered 500 or garbage, or the
    gateway itself failed unexpectedly (never answered as 500)."""

    status, slug, title = 502, "bad-gateway", "Bad Gateway"


class UpstreamFailed(BadGateway):
    """The upstream answered 500: a 502 that names the upstream's trace when it gave one."""

    def __init__(
        self, detail: str, *, trace_id: str | None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail, headers=headers)
        self.trace_id = trace_id


class UpstreamUnavailable(ProblemError):
    """The upstream's breaker is open, or it is saturated."""

    status, slug, title = 503, "upstream-unavailable", "Upstream Unavailable"


class UpstreamTimeout(ProblemError):
    """The upstream did not answer in time."""

    status, slug, title = 504, "upstream-timeout", "Upstream Timeout"


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    trace_id: str,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> web.Response:
    """A problem+json response."""
    body = Problem(
        status,
        slug,
        title,
        detail,
        instance=instance,
        trace_id=trace_id,
        extensions=dict(extensions or {}),
    ).to_dict()
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=dict(headers or {}),
    )


def error_response(exc: ProblemError, *, instance: str, trace_id: str) -> web.Response:
    """The problem answer of a gateway failure."""
    if isinstance(exc, UpstreamFailed) and exc.trace_id:
        trace_id = exc.trace_id  # where the upstream logged what went wrong
    return problem(
        exc.status,
        exc.slug,
        exc.title,
        exc.detail or exc.title,
        instance=instance,
        trace_id=trace_id,
        headers=exc.headers,
    )
