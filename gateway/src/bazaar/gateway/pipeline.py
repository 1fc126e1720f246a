"""One request through the gateway: route, limits, identity, rate limit, forward, answer."""

from __future__ import annotations

import base64
import binascii
import logging
import time
from urllib.parse import parse_qs, unquote_plus

from aiohttp import web
from multidict import CIMultiDict

from bazaar.gateway.accesslog import AccessLog
from bazaar.gateway.authn import Authenticator, require
from bazaar.gateway.clientaddr import ClientAddress
from bazaar.gateway.config import GatewaySettings
from bazaar.gateway.cors import Cors
from bazaar.gateway.errors import (
    GatewayError,
    NotRouted,
    PayloadTooLarge,
    RateLimited,
    error_response,
)
from bazaar.gateway.metrics import GatewayMetrics
from bazaar.gateway.proxy import Upstream, end_to_end
from bazaar.gateway.ratelimit import Policy, RateLimiter, Verdict
from bazaar.gateway.routes import Route, RouteTable
from bazaar.gateway.tracing import TraceContext, continue_or_start
from bazaar.shared.auth import Principal
from bazaar.shared.middleware import accept_request_id
from bazaar.shared.tracecontext import request_id_var

access_log = logging.getLogger("bazaar.access")

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
#: Metric labels take these as they are; any other method token counts as OTHER (a client
#: must not be able to create unbounded series).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class Pipeline:
    """The gateway's request handling, built once from the settings."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        upstreams: dict[str, Upstream],
        authenticator: Authenticator,
        limiter: RateLimiter,
        metrics: GatewayMetrics,
    ) -> None:
        self.settings = settings
        self.routes = RouteTable(settings.routes)
        self.upstreams = upstreams
        self.authn = authenticator
        self.limiter = limiter
        self.metrics = metrics
        self.access = AccessLog(access_log)
        self.clients = ClientAddress(settings.trusted_proxies)
        self.cors = Cors(settings.cors_origins)
        self.policies = {
            name: Policy(name, p.quota, p.window) for name, p in settings.rate_limits.items()
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one request end to end; every answer carries the request and trace ids."""
        started = time.perf_counter()
        trace = continue_or_start(request.headers.get("traceparent"))
        request_id = accept_request_id(request.headers.get("X-Request-ID"))
        token = request_id_var.set(request_id)
        own = {"X-Request-ID": request_id, "X-Trace-Id": trace.trace_id, **SECURITY_HEADERS}
        route: Route | None = None
        client = self.clients.resolve(request.remote, request.headers.get("X-Forwarded-For"))
        own.update(self.cors.headers(request.headers.get("Origin")))
        response: web.StreamResponse
        try:
            if self.cors.is_preflight(request):
                response = self.cors.preflight(request, own)
            else:
                if not is_plain_path(request):
                    raise NotRouted("No route serves this path.")
                route = self.routes.match(request.method, request.path)
                if route is None:
                    raise NotRouted(f"No route serves {request.path}.")
                response = await self._through(request, route, trace, request_id, client, own)
        except GatewayError as caught:
            failure = caught
            if "RateLimit" not in own:
                # Early answers (404, 401, 413…) are counted and limited too, by address:
                # otherwise forged tokens or probes could be sent without any limit.
                verdict = (
                    await self._limit([(self.policies["anonymous"], client)])
                    if self.settings.rate_limiting
                    else Verdict([])
                )
                own.update(verdict.headers())
                if not verdict.allowed:
                    failure = RateLimited(
                        "Too many requests; retry later.",
                        headers={"Retry-After": str(verdict.retry_after)},
                    )
            failure.headers.update(own)
            response = error_response(failure, instance=request.path, trace_id=trace.trace_id)
        finally:
            request_id_var.reset(token)
        self._record(request, route, response, started, trace, request_id, client)
        return response

    async def _through(
        self,
        request: web.Request,
        route: Route,
        trace: TraceContext,
        request_id: str,
        client: str,
        own: dict[str, str],
    ) -> web.StreamResponse:
        config = route.config
        length = request.content_length
        if length is not None and length > self.settings.max_body_bytes:
            raise PayloadTooLarge(f"The body exceeds {self.settings.max_body_bytes} bytes.")
        # Bodies of unknown length are read (bounded) before anything goes upstream; so is
        # the token endpoint's form, whose username the "token" policy counts.
        body = None
        if request.can_read_body and (length is None or config.rate_limit == "token"):
            body = await self._read_bounded(request)
        principal = await self._principal(request, route)
        verdict = await self._rate_limit(
            route, principal, client, body, request.headers.get("Authorization")
        )
        if verdict.decisions:
            own.update(verdict.headers())
        if not verdict.allowed:
            raise RateLimited(
                "Too many requests; retry later.",
                headers={"Retry-After": str(verdict.retry_after)},
            )
        if config.deprecated_sunset:
            own.update({"Deprecation": "true", "Sunset": config.deprecated_sunset})
            who = principal.subject if principal else client
            self.metrics.deprecated.labels(route.label, who).inc()
        headers = self._upstream_headers(request, trace, request_id)
        upstream = self.upstreams[config.upstream]
        return await upstream.forward(
            request,
            headers=headers,
            body=body,
            seconds=config.timeout,
            extra_response_headers=own,
        )

    async def _read_bounded(self, request: web.Request) -> bytes:
        limit = self.settings.max_body_bytes
        chunks, size = [], 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The body exceeds {limit} bytes.")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _principal(self, request: web.Request, route: Route) -> Principal | None:
        authorization = request.headers.get("Authorization")
        if route.config.auth == "public":
            # A public route serves anyone; a valid token only picks the "user" policy.
            try:
                return await self.authn.principal(authorization)
            except GatewayError:
                return None
        principal = await self.authn.principal(authorization)
        require(principal, route.config.scope)
        return principal

    async def _rate_limit(
        self,
        route: Route,
        principal: Principal | None,
        client: str,
        body: bytes | None,
        authorization: str | None,
    ) -> Verdict:
        if not self.settings.rate_limiting:
            return Verdict([])
        checks: list[tuple[Policy, str]] = []
        if principal is not None:
            checks.append((self.policies["user"], principal.subject))
        else:
            checks.append((self.policies["anonymous"], client))
        extra = route.config.rate_limit
        if extra == "token":
            who = _token_subject(body, authorization)
            if who is not None:  # refresh grants count only against the address policy
                checks.append((self.policies["token"], f"{client}|{who}"))
        elif extra is not None:
            checks.append((self.policies[extra], principal.subject if principal else client))
        return await self._limit(checks)

    async def _limit(self, checks: list[tuple[Policy, str]]) -> Verdict:
        verdict = await self.limiter.hit(checks)
        for decision in verdict.decisions:
            outcome = "allowed" if decision.allowed else "denied"
            self.metrics.rate_limit.inc((decision.policy.name, outcome))
        return verdict

    def _upstream_headers(
        self, request: web.Request, trace: TraceContext, request_id: str
    ) -> CIMultiDict[str]:
        headers = end_to_end(request.headers)
        for name in list(headers):
            lowered = name.lower()
            if lowered in IDENTITY_HEADERS or lowered.startswith(IDENTITY_PREFIXES):
                del headers[name]
        headers.popall("Host", None)
        if request.content_length is None:  # a buffered chunked body gets its own length
            headers.popall("Content-Length", None)
        headers["X-Forwarded-For"] = self.clients.forwarded_for(
            request.remote, request.headers.get("X-Forwarded-For")
        )
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Forwarded-Host"] = request.host
        headers["X-Request-ID"] = request_id
        headers["traceparent"] = trace.traceparent()
        return headers

    def _record(
        self,
        request: web.Request,
        route: Route | None,
        response: web.StreamResponse,
        started: float,
        trace: TraceContext,
        request_id: str,
        client: str,
    ) -> None:
        elapsed = time.perf_counter() - started
        label = route.label if route else "unmatched"
        method = request.method if request.method in KNOWN_METHODS else "OTHER"
        self.metrics.observe(label, method, response.status, elapsed)
        self.access.write(
            method=request.method,
            path=request.path,
            status=response.status,
            fields={
                "http_method": method,
                "http_route": label,
                "http_status": response.status,
                "duration_ms": round(elapsed * 1000, 2),
                "client": client,
                "trace_id": trace.trace_id,
                "span_id": trace.span_id,
                "request_id": request_id,
            },
        )


def _token_subject(body: bytes | None, authorization: str | None) -> str | None:
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
    raw = request.rel_url.raw_path.lower()
    if "%2f" in raw or "%5c" in raw or "\\" in raw:
        return False
    return not any(segment in (".", "..") for segment in request.path.split("/"))
