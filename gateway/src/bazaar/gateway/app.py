"""The gateway's composition root: upstreams, verifier, rate limiter, routes, ops endpoints."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp
import redis.asyncio
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bazaar.gateway.authn import Authenticator
from bazaar.gateway.config import GatewaySettings
from bazaar.gateway.docs import OpenApiAggregator, docs_routes
from bazaar.gateway.errors import problem
from bazaar.gateway.metrics import GatewayMetrics
from bazaar.gateway.pipeline import SECURITY_HEADERS, Pipeline
from bazaar.gateway.proxy import Upstream
from bazaar.gateway.ratelimit import (
    FallbackRateLimiter,
    MemoryRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from bazaar.gateway.spans import SpanRecorder, otlp_recorder
from bazaar.gateway.tracing import TraceContext, continue_or_start
from bazaar.shared.auth import TokenVerifier
from bazaar.shared.middleware import accept_request_id

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
    spans = spans or otlp_recorder(settings.otel_exporter_otlp_endpoint, version=settings.version)
    metrics = GatewayMetrics()
    upstreams = {name: Upstream(name, cfg, metrics) for name, cfg in settings.upstreams.items()}
    metrics.watch_breakers(lambda: {n: float(u.breaker.state.value) for n, u in upstreams.items()})
    verifier = TokenVerifier(settings.verifier_settings(), cache_size=settings.token_cache_size)
    memory = MemoryRateLimiter()
    redis_client = redis.asyncio.from_url(settings.redis_url) if settings.redis_url else None
    limiter: RateLimiter = memory
    if redis_client is not None:

        def fell_back(exc: BaseException) -> None:
            metrics.rate_limit_fallback.inc()
            log.warning("rate limiting in-process: Redis failed (%s)", type(exc).__name__)

        limiter = FallbackRateLimiter(
            RedisRateLimiter(redis_client, prefix=settings.redis_prefix),
            memory,
            on_fallback=fell_back,
            timeout=settings.redis_timeout_seconds,
        )
    pipeline = Pipeline(
        settings,
        upstreams=upstreams,
        authenticator=Authenticator(verifier),
        limiter=limiter,
        metrics=metrics,
        spans=spans,
    )

    # auto_decompress off: a gzip request body is forwarded as the client encoded it.
    app = web.Application(
        client_max_size=settings.max_body_bytes, handler_args={"auto_decompress": False}
    )
    app[SETTINGS], app[METRICS], app[UPSTREAMS] = settings, metrics, upstreams

    sources = {name: f"{u.base}/openapi.json" for name, u in upstreams.items()}
    aggregator = OpenApiAggregator(None, sources, title="Bazaar API", version=settings.version)
    docs_session: list[aiohttp.ClientSession] = []

    async def start(_app: web.Application) -> None:
        for upstream in upstreams.values():
            await upstream.start()
        docs_session.append(aiohttp.ClientSession())
        aggregator.bind(docs_session[0])

    async def stop(_app: web.Application) -> None:
        for upstream in upstreams.values():
            await upstream.close()
        for session in docs_session:
            await session.close()
        await verifier.aclose()
        if redis_client is not None:
            await redis_client.aclose()
        if spans is not None:
            spans.shutdown()

    app.on_startup.append(start)
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
    everything.add_route("*", pipeline.handle)
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
    return web.json_response(
        {"service": "gateway", "version": settings.version, "environment": settings.environment}
    )
