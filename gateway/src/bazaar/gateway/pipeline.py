"""One request through the gateway: route, limits, identity, rate limit, forward, answer."""

from __future__ import annotations

import contextlib
import logging
import time

from aiohttp import web

from bazaar.gateway.accesslog import AccessLog, Entry
from bazaar.gateway.admission import Admission, StreamSlot
from bazaar.gateway.authn import Authenticator, require
from bazaar.gateway.body import BodyBudget, read_body
from bazaar.gateway.cache import Forward, ResponseCache
from bazaar.gateway.clientaddr import ClientAddress
from bazaar.gateway.config import GatewaySettings
from bazaar.gateway.cors import Cors
from bazaar.gateway.errors import (
    BadGateway,
    BodyBudgetExhausted,
    GatewayError,
    NotRouted,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    error_response,
)
from bazaar.gateway.forwarding import is_plain_path, upstream_headers
from bazaar.gateway.metrics import GatewayMetrics
from bazaar.gateway.proxy import Upstream
from bazaar.gateway.ratelimit import RateLimiter
from bazaar.gateway.routes import Route, RouteTable
from bazaar.gateway.spans import SpanRecorder
from bazaar.shared.auth import Principal
from bazaar.shared.metrics import KNOWN_METHODS, OTHER_METHOD
from bazaar.shared.middleware import accept_request_id
from bazaar.shared.tracecontext import request_id_var
from bazaar.shared.traceparent import TraceContext, continue_or_start, fresh_ids

access_log = logging.getLogger("bazaar.access")
log = logging.getLogger("bazaar.gateway")
#: The `client_id` of deprecated-route use without a valid token.
ANONYMOUS = "anonymous"
#: ... and with a valid token naming no client (API.md's tokens always name one).
UNKNOWN_CLIENT = "unknown"

#: Failures answered with the client's body (partly) unread: the connection is closed after
#: the answer, so the rest is neither waited for nor read (aiohttp would linger on it for
#: another 10 s, reading whatever a client keeps sending). So is any failure answered
#: before a body has fully arrived (a 401 to a stalled upload).
_CLOSING = (RequestTimeout, PayloadTooLarge, BodyBudgetExhausted)
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
        cache: ResponseCache | None = None,
    ) -> None:
        self.settings = settings
        self.spans = spans
        self.routes = RouteTable(settings.routes)
        self.upstreams = upstreams
        self.authn = authenticator
        self.metrics = metrics
        self.access = AccessLog(access_log)
        self.clients = ClientAddress(settings.trusted_proxies)
        self.cors = Cors(settings.cors_origins)
        self.admission = Admission(settings, limiter, metrics)
        self.bodies = BodyBudget(settings.body_budget_bytes)
        self.cache = cache

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
        metrics = self.metrics
        metrics.active += 1
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
            response = await self._failure(caught, request, client, own, trace)
        except Exception:
            if request.writer.output_size:  # the answer is under way: only a cut is left
                raise
            # Never aiohttp's plain-text 500: the gateway's own failure is a problem too.
            log.exception("unexpected failure answering %s %s", request.method, request.path)
            failure = BadGateway("The gateway could not complete this request.")
            response = await self._failure(failure, request, client, own, trace)
        finally:
            metrics.active -= 1
            request_id_var.reset(token)
        self._record(request, route, response, started, trace, request_id, client)
        return response

    async def _failure(
        self,
        failure: GatewayError,
        request: web.Request,
        client: str,
        own: dict[str, str],
        trace: TraceContext,
    ) -> web.Response:
        if "RateLimit" not in own:
            # Early answers (404, 401, 413…) are counted and limited too, by address:
            # otherwise forged tokens or probes could be sent without any limit.
            verdict = await self.admission.for_address(client)
            own.update(verdict.headers())
            if not verdict.allowed:
                failure = RateLimited(
                    "Too many requests; retry later.",
                    headers={"Retry-After": str(verdict.retry_after)},
                )
        failure.headers.update(own)
        response = error_response(failure, instance=request.path, trace_id=trace.trace_id)
        if isinstance(failure, _CLOSING) or not request.content.is_eof():
            # Answer and close now: the rest of the body is neither waited for nor read.
            with contextlib.suppress(ConnectionError):
                await response.prepare(request)
                await response.write_eof()
            request.protocol.force_close()
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
        upstream = self.upstreams[config.upstream]
        length = request.content_length
        if length is not None and length > self.settings.max_body_bytes:
            raise PayloadTooLarge(f"The body exceeds {self.settings.max_body_bytes} bytes.")
        # Every body is read whole (bounded in size, time and memory) before anything goes
        # upstream (see bazaar.gateway.body), and only once the request is authenticated
        # and within its rate limit; the token endpoint's form first, as the "token" policy
        # counts who it authenticates.
        body: bytearray | None = None
        stream: StreamSlot | None = None
        try:
            if request.can_read_body and config.rate_limit == "token":
                body = await self._read_body(request, upstream)
            principal = await self._principal(request, route)
            verdict = await self.admission.for_request(
                route, principal, client, body, request.headers.get("Authorization")
            )
            if verdict.decisions:
                own.update(verdict.headers())
            if not verdict.allowed:
                raise RateLimited(
                    "Too many requests; retry later.",
                    headers={"Retry-After": str(verdict.retry_after)},
                )
            # An event stream counts once above, and among the caller's open streams here.
            stream = self.admission.stream_slot(principal, client, request.headers.get("Accept"))
            if config.deprecated_sunset:
                own.update({"Deprecation": "true", "Sunset": config.deprecated_sunset})
                self._deprecated_use(route, principal, client)
            if body is None and request.can_read_body:
                body = await self._read_body(request, upstream)
            headers = upstream_headers(request, self.clients, trace, request_id)
            forward: Forward = upstream.forward
            if self.cache is not None:  # product reads and writes (bazaar.gateway.cache)
                forward = self.cache.around(forward, request)
            return await forward(
                request,
                headers=headers,
                body=body,
                seconds=config.timeout,
                extra_response_headers=own,
                resendable=(
                    config.idempotent_post
                    and request.method == "POST"
                    and request.path == config.prefix
                    and "Idempotency-Key" in headers
                ),
                stream=stream,
            )
        finally:
            if stream is not None:
                stream.give_back()
            if body is not None:
                self.bodies.give_back(len(body))

    def _deprecated_use(self, route: Route, principal: Principal | None, client: str) -> None:
        """Count a deprecated route's use by OAuth client (bounded), and log who used it."""
        client_id = ANONYMOUS if principal is None else _client_id(principal)
        self.metrics.deprecated.labels(route.label, client_id).inc()
        log.info(
            "deprecated route %s used by client %s",
            route.label,
            client_id,
            extra={
                "event": "deprecated-route-used",
                "http_route": route.label,
                "client_id": client_id,
                "user": None if principal is None else principal.subject,
                "client": client,
            },
        )

    async def _read_body(self, request: web.Request, upstream: Upstream) -> bytearray:
        return await read_body(
            request,
            budget=self.bodies,
            limit=self.settings.max_body_bytes,
            idle_seconds=upstream.config.body_idle_seconds,
            total_seconds=upstream.config.body_timeout_seconds,
        )

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
        method = request.method if request.method in KNOWN_METHODS else OTHER_METHOD
        self.metrics.observe(method, label, response.status, elapsed)
        if self.spans is not None:
            end_ns = time.time_ns()
            self.spans.record(
                trace,
                name=f"{method} {label}",
                start_ns=end_ns - int(elapsed * 1e9),
                end_ns=end_ns,
                status=response.status,
                attributes={
                    "http.request.method": method,
                    "http.route": label,
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


def _client_id(principal: Principal) -> str:
    """The OAuth client the token was issued to (its `client_id`, else `azp` claim)."""
    if principal.client_id:
        return principal.client_id
    azp = principal.claims.get("azp")
    return azp if isinstance(azp, str) and azp else UNKNOWN_CLIENT
