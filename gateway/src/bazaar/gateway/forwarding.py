"""What goes upstream: the client's headers cleaned of forgeries and hop-by-hop ones, plus
the gateway's own; which paths may be routed."""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from bazaar.gateway.clientaddr import ClientAddress
from bazaar.gateway.relay import HOP_BY_HOP, connection_named
from bazaar.shared.traceparent import TraceContext

#: Headers a client might send to pass itself off as someone: never forwarded.
IDENTITY_HEADERS = (
    "x-user-id",
    "x-user",
    "x-user-email",
    "x-user-roles",
    "x-user-scopes",
    "x-authenticated-user",
    "x-authenticated-userid",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-principal",
    "x-client-id",
    "x-scopes",
    "x-remote-user",
    "x-consumer-id",
    "x-consumer-username",
)
IDENTITY_PREFIXES = ("x-auth-", "x-bazaar-")
#: Never passed on as the client sent them: hop-by-hop, identities, Host, and the headers
#: the gateway sets itself.
_NOT_FORWARDED = (
    HOP_BY_HOP
    | frozenset(IDENTITY_HEADERS)
    | {
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
        "traceparent",
        "expect",  # the body is read before it goes upstream: nothing is left to expect
    }
)


def upstream_headers(
    request: web.Request, clients: ClientAddress, trace: TraceContext, request_id: str
) -> CIMultiDict[str]:
    """The client's end-to-end headers, minus forged identities, plus the gateway's own."""
    source = request.headers
    named = connection_named(source)
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in source.items():
        lowered = name.lower()
        if (
            lowered in _NOT_FORWARDED
            or lowered.startswith(IDENTITY_PREFIXES)
            or (named and lowered in named)
        ):
            continue
        headers.add(name, value)
    if request.content_length is None:  # a buffered chunked body gets its own length
        headers.popall("Content-Length", None)
    headers.add(
        "X-Forwarded-For",
        clients.forwarded_for(request.remote, source.get("X-Forwarded-For")),
    )
    headers.add("X-Forwarded-Proto", request.scheme)
    headers.add("X-Forwarded-Host", request.host)
    headers.add("X-Request-ID", request_id)
    headers.add("traceparent", trace.traceparent())
    return headers


def is_plain_path(request: web.Request) -> bool:
    """No dot segments, encoded slashes or backslashes: the path routed is the path sent.

    Upstream servers normalise `/v1/products/../reservations`; the gateway must not route
    it as a product path (it would skip the internal-path rule and scope checks).
    """
    raw = request.rel_url.raw_path
    if "%" in raw or "\\" in raw:
        lowered = raw.lower()
        if "%2f" in lowered or "%5c" in lowered or "\\" in lowered:
            return False
    path = request.path
    if "/." not in path:  # every dot segment follows a slash
        return True
    return not any(segment in (".", "..") for segment in path.split("/"))
