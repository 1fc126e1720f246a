"""The gateway's composition root: upstreams, verifier, rate limiter, routes, ops endpoints."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bazaar.gateway.authn import Authenticator
from bazaar.gateway.body import expect_nothing
from bazaar.gateway.cache import EdgeCache
from bazaar.gateway.config import GatewaySettings
from bazaar.gateway.docs import OpenApiAggregator, docs_routes
from bazaar.gateway.edge import EDGE, PROXY, Edge, Proxy, hide_server_version
from bazaar.gateway.errors import problem
from bazaar.gateway.metrics import GatewayMetrics
from bazaar.gateway.pipeline import SECURITY_HEADERS, Pipeline
from bazaar.gateway.proxy import Upstream
from bazaar.gateway.ratelimit import (
    FallbackRateLimiter,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    connect_redis,
)
from bazaar.gateway.spans import SpanRecorder, otlp_recorder
from bazaar.gateway.throttledlog import ThrottledWarning
from bazaar.shared.auth import TokenVerifier
from bazaar.shared.middleware import accept_request_id
from bazaar.shared.traceparent import TraceContext, continue_or_start
from bazaar.shared.version import service_version

log = logging.getLogger("bazaar.gateway")

SETTINGS = web.AppKey("settings", GatewaySettings)
METRICS = web.AppKey("metrics", GatewayMetrics)
UPSTREAMS = web.AppKey("upstreams", dict)
READY_TIMEOUT = 2.0


def create_app(
    settings: GatewaySettings | None = None, *, spans: SpanRecorder | None = None
) -> web.Application:
    """Build the gateway from its settings (read from the environment when not given).

    Server spans go to `spans`, else over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    """
    settings = settings or GatewaySettings()
    version = service_version(settings.service_name)
    spans = spans or otlp_recorder(settings.otel_exporter_otlp_endpoint, version=version)
    metrics = GatewayMetrics()
    upstreams = {name: Upstream(name, cfg, metrics) for name, cfg in settings.upstreams.items()}
    metrics.watch_breakers(
        lambda: [(n, u.breaker.state.value, u.breaker.opened) for n, u in upstreams.items()]
    )
    verifier = TokenVerifier(settings.verifier_settings(), cache_size=settings.token_cache_size)
    memory = MemoryRateLimiter()
    redis_client = (
        connect_redis(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            pool_timeout=settings.redis_timeout_seconds,
        )
        if settings.redis_url
        else None
    )
    limiter: RateLimiter = memory
    throttled: list[ThrottledWarning] = []
    if redis_client is not None:
        fallback_warning = ThrottledWarning(log)  # once per decision would flood the log
        throttled.append(fallback_warning)

        def fell_back(exc: BaseException) -> None:
            metrics.rate_limit_fallback.inc()
            fallback_warning.warn("rate limiting in-process: Redis failed (%s)", type(exc).__name__)

        limiter = FallbackRateLimiter(
            RedisRateLimiter(redis_client, prefix=settings.redis_prefix),
            memory,
            on_fallback=fell_back,
            timeout=settings.redis_timeout_seconds,
        )
    cache = EdgeCache(settings, metrics.registry) if settings.cache_enabled else None
    pipeline = Pipeline(
        settings,
        upstreams=upstreams,
        authenticator=Authenticator(verifier),
        limiter=limiter,
        metrics=metrics,
        spans=spans,
        cache=None if cache is None else cache.cache,
    )

    # auto_decompress off: a gzip request body is forwarded as the client encoded it.
    # Served by an EdgeRunner, parser errors and oversized heads are answered as problems.
    hide_server_version()
    edge = Edge(
        settings.max_header_bytes,
        settings.keepalive_timeout,
        counted=lambda status: metrics.edge_refused.labels(str(status)).inc(),
    )
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        handler_args={"auto_decompress": False, **edge.handler_args()},
    )
    throttled.append(edge.warning)
    app[SETTINGS], app[METRICS], app[UPSTREAMS], app[EDGE] = settings, metrics, upstreams, edge

    sources = {name: f"{u.base}/openapi.json" for name, u in upstreams.items()}
    aggregator = OpenApiAggregator(None, sources, title="Bazaar API", version=version)
    docs_session: list[aiohttp.ClientSession] = []

    async def start(_app: web.Application) -> None:
        for upstream in upstreams.values():
            await upstream.start()
        docs_session.append(aiohttp.ClientSession())
        aggregator.bind(docs_session[0])
        if cache is not None:
            await cache.start()

    async def stop(_app: web.Application) -> None:
        for warning in throttled:  # a burst's tail is reported, not lost with the process
            warning.flush()
        if cache is not None:
            await cache.stop()
        for upstream in upstreams.values():
            await upstream.close()
        for session in docs_session:
            await session.close()
        await verifier.aclose()
        if redis_client is not None:
            await redis_client.aclose()
        if spans is not None:
            spans.shutdown()

    async def end_streams(_app: web.Application) -> None:
        # Shutdown, once the listener is closed and before in-flight requests are waited
        # for: event streams never finish on their own, so they end now, cleanly.
        pipeline.admission.streams.end_all()

    app.on_startup.append(start)
    app.on_shutdown.append(end_streams)
    app.on_cleanup.append(stop)
    app.router.add_get("/healthz", _with_context(_healthz))
    app.router.add_get("/readyz", _with_context(_readyz))
    app.router.add_get("/metrics", _with_context(_metrics))
    app.router.add_get("/version", _with_context(_version))
    # /openapi.json, /docs, /docs/static/{name}
    app.add_routes(
        web.route(r.method, r.path, _with_context(r.handler), **r.kwargs)
        for r in docs_routes(aggregator)
        if isinstance(r, web.RouteDef)
    )
    everything = EveryPath()
    app.router.register_resource(everything)
    everything.add_route("*", pipeline.handle, expect_handler=expect_nothing)
    # Served by an EdgeRunner, every other path goes to the pipeline without the router.
    app[PROXY] = Proxy(everything)
    return app


class EveryPath(web.DynamicResource):
    """`/{tail:.*}` without its cost: every path matches, with nothing to extract (the
    pipeline routes by `request.path` itself), so no regex runs and nothing is unquoted."""

    def __init__(self) -> None:
        super().__init__("/{tail:.*}")

    def _match(self, path: str) -> dict[str, str] | None:  # noqa: ARG002
        return {}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TRACE = web.RequestKey("trace", TraceContext)


def _with_context(handler: Handler) -> Handler:
    """The gateway's own endpoints carry the same ids and security headers as the rest."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        trace = continue_or_start(request.headers.get("traceparent"))
        request_id = accept_request_id(request.headers.get("X-Request-ID"))
        request[TRACE] = trace
        response: web.StreamResponse = await handler(request)
        response.headers.update(
            {"X-Request-ID": request_id, "X-Trace-Id": trace.trace_id, **SECURITY_HEADERS}
        )
        return response

    return wrapped


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    """Ready when every upstream answers its own /readyz."""
    upstreams: dict[str, Upstream] = request.app[UPSTREAMS]

    async def ready(upstream: Upstream) -> bool:
        assert upstream.session is not None
        try:
            async with upstream.session.get(
                upstream.base + "/readyz", timeout=aiohttp.ClientTimeout(total=READY_TIMEOUT)
            ) as answer:
                return answer.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    names = list(upstreams)
    results = await asyncio.gather(*(ready(upstreams[n]) for n in names))
    checks = {n: ("ok" if ok else "failing") for n, ok in zip(names, results, strict=True)}
    if all(results):
        return web.json_response({"status": "ready", "checks": checks})
    failing = ", ".join(n for n, state in checks.items() if state != "ok")
    return problem(
        503,
        "not-ready",
        "Not Ready",
        f"Upstreams unavailable: {failing}.",
        instance="/readyz",
        trace_id=request[TRACE].trace_id,
        extensions={"checks": checks},
    )


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _version(request: web.Request) -> web.Response:
    settings: GatewaySettings = request.app[SETTINGS]
    service = settings.service_name
    return web.json_response(
        {
            "service": service,
            "version": service_version(service),
            "environment": settings.environment,
        }
    )
