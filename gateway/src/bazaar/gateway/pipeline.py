"""One request through the gateway: route, limits, identity, rate limit, forward, answer."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from bazaar.gateway.accesslog import AccessLog, Entry
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
from bazaar.gateway.forwarding import is_plain_path, token_subject, upstream_headers
from bazaar.gateway.metrics import GatewayMetrics
from bazaar.gateway.proxy import Upstream
from bazaar.gateway.ratelimit import Policy, RateLimiter, Verdict
from bazaar.gateway.routes import Route, RouteTable
from bazaar.gateway.spans import SpanRecorder
from bazaar.gateway.tracing import TraceContext, continue_or_start, fresh_ids
from bazaar.shared.auth import Principal
from bazaar.shared.middleware import accept_request_id
from bazaar.shared.tracecontext import request_id_var

access_log = logging.getLogger("bazaar.access")

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
        spans: SpanRecorder | None = None,
    ) -> None:
        self.settings = settings
        self.spans = spans
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
        ids = fresh_ids()  # one system call for the new trace, span and request ids
        given_id = request.headers.get("X-Request-ID")
        trace = continue_or_start(request.headers.get("traceparent"), ids)
        request_id = ids[48:] if given_id is None else accept_request_id(given_id)
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
        headers = upstream_headers(request, self.clients, trace, request_id)
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
            who = token_subject(body, authorization)
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
        if self.spans is not None:
            end_ns = time.time_ns()
            prefix = route.config.prefix if route else "unmatched"
            self.spans.record(
                trace,
                name=f"{method} {prefix}",
                start_ns=end_ns - int(elapsed * 1e9),
                end_ns=end_ns,
                status=response.status,
                attributes={
                    "http.request.method": method,
                    "http.route": prefix,
                    "url.path": request.path,
                    "client.address": client,
                },
            )
        self.access.write(
            Entry(
                request.method,
                request.path,
                response.status,
                method,
                label,
                round(elapsed * 1000, 2),
                client,
                trace.trace_id,
                trace.span_id,
                request_id,
            )
        )
