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
    Unauthorized,
)

#: Every failure the gateway answers itself is a ProblemError (the shared error type).
GatewayError = ProblemError

__all__ = [
    "BadGateway",
    "Forbidden",
    "GatewayError",
    "NotRouted",
    "PayloadTooLarge",
    "RateLimited",
    "Unauthorized",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "error_response",
    "problem",
]


class NotRouted(NotFound):
    """No route serves this path (internal paths included)."""


class RateLimited(ProblemError):
    """A rate-limit policy is exhausted for this client."""

    status, slug, title = 429, "rate-limited", "Too Many Requests"


class BadGateway(ProblemError):
    """The upstream refused or reset the connection, or failed without a problem answer."""

    status, slug, title = 502, "bad-gateway", "Bad Gateway"


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
    instance: str,
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
    return problem(
        exc.status,
        exc.slug,
        exc.title,
        exc.detail or exc.title,
        instance=instance,
        trace_id=trace_id,
        headers=exc.headers,
    )
