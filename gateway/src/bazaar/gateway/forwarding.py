"""What goes upstream: the client's headers cleaned of forgeries and hop-by-hop ones, plus
the gateway's own; which paths may be routed; whom a token request is about."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qs, unquote_plus

from aiohttp import web
from multidict import CIMultiDict

from bazaar.gateway.clientaddr import ClientAddress
from bazaar.gateway.proxy import HOP_BY_HOP, connection_named
from bazaar.gateway.tracing import TraceContext

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


def token_subject(body: bytes | None, authorization: str | None) -> str | None:
    """Whom a token request is about: the username, or the client id of client credentials."""
    if not body:
        return None
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return None
    grant = form.get("grant_type", [""])[0]
    if grant == "password":
        return form.get("username", [""])[0].strip().lower() or None
    if grant == "client_credentials":
        return form.get("client_id", [""])[0] or _basic_client_id(authorization)
    return None


def _basic_client_id(authorization: str | None) -> str | None:
    """The client id of HTTP Basic client authentication (RFC 6749 §2.3.1)."""
    if authorization is None:
        return None
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id = unquote_plus(decoded.partition(":")[0])
    return client_id or None


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
