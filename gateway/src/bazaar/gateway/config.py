"""Gateway settings (environment prefix GATEWAY_): upstreams, the route table, limits."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from bazaar.shared.settings import ProcessSettings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class UpstreamConfig(BaseModel):
    """One service behind the gateway."""

    # A stale or misspelt setting fails loudly instead of being silently ignored.
    model_config = ConfigDict(extra="forbid")

    url: str
    #: Requests in flight to this upstream at most; more wait briefly, then get 503.
    max_concurrency: int = Field(default=256, ge=1)
    connect_timeout: float = Field(default=1.0, gt=0)
    #: A pooled connection idle this long is closed, not reused: less than the upstream
    #: keeps an idle connection open (the services: 5 s, KEEP_ALIVE_SECONDS), so none is reused just
    #: as the upstream closes it.
    pool_idle_seconds: float = Field(default=2.0, gt=0)
    #: Seconds a client may send nothing of its body (408 after; API.md: at most 30 s);
    #: bodies are read before anything goes upstream, so a stalled or aborted upload never
    #: reaches the upstream.
    body_idle_seconds: float = Field(default=10.0, gt=0, le=30)
    #: Seconds a client gets to send its whole body however steadily it sends (408 after):
    #: a slow but steady upload is not cut, a trickle does not hold its memory for ever.
    body_timeout_seconds: float = Field(default=120.0, gt=0)
    #: Seconds a streamed answer (Server-Sent Events, a large download) may bring nothing
    #: while the gateway waits for it; time spent writing to a slow client does not count.
    stream_idle_seconds: float = Field(default=60.0, gt=0)
    #: The breaker opens when, over the last `breaker_window_seconds`, at least
    #: `breaker_min_calls` calls were made and `breaker_failure_rate` of them failed
    #: (connect errors, timeouts, 500/502/503/504 answers).
    breaker_window_seconds: int = Field(default=10, ge=1, le=60)
    breaker_min_calls: int = Field(default=20, ge=1)
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    #: Seconds the breaker stays open before its first trial request; the pause doubles
    #: after each failed trial, up to `breaker_max_reset_seconds`.
    breaker_reset_seconds: float = Field(default=0.5, gt=0)
    breaker_max_reset_seconds: float = Field(default=2.0, gt=0)


class RouteConfig(BaseModel):
    """A path prefix (and methods) routed to an upstream, with its rules."""

    model_config = ConfigDict(extra="forbid")

    #: A path prefix; a segment written `{name}` matches any one segment.
    prefix: str
    upstream: str
    methods: tuple[str, ...] | None = None  # None: every method
    auth: Literal["public", "token"] = "token"
    scope: str | None = None
    #: Seconds until the upstream's answer head arrives (a small answer's body too); a
    #: streamed answer then runs on under the upstream's `stream_idle_seconds`.
    timeout: float = Field(default=10.0, gt=0)
    #: The upstream honours `Idempotency-Key` on POST to exactly `prefix` (API.md): such a
    #: POST is sent again once when it provably never reached the upstream.
    idempotent_post: bool = False
    #: Extra rate-limit policy (besides "user"/"anonymous"), e.g. "token" on the token endpoint.
    rate_limit: str | None = None
    deprecated_sunset: str | None = None  # an HTTP-date; the route is deprecated when set


class PolicyConfig(BaseModel):
    """A rate-limit policy: `quota` requests per `window` seconds."""

    quota: int = Field(ge=1)
    window: int = Field(ge=1)


DEFAULT_UPSTREAMS = {
    "auth": UpstreamConfig(url="http://127.0.0.1:8001"),
    "catalog": UpstreamConfig(url="http://127.0.0.1:8002"),
    "orders": UpstreamConfig(url="http://127.0.0.1:8003"),
}

# First match wins. /v1/reservations is internal: no route, so the gateway answers 404.
DEFAULT_ROUTES = (
    RouteConfig(prefix="/v1/auth/token", upstream="auth", auth="public", rate_limit="token"),
    RouteConfig(prefix="/v1/auth/", upstream="auth", auth="public"),
    RouteConfig(prefix="/.well-known/", upstream="auth", auth="public"),
    RouteConfig(prefix="/v1/users", upstream="auth", methods=("POST",), auth="public"),
    RouteConfig(prefix="/v1/users/me", upstream="auth"),
    RouteConfig(prefix="/v1/users", upstream="auth", scope="users:admin"),
    RouteConfig(prefix="/v1/products", upstream="catalog", methods=("GET", "HEAD"), auth="public"),
    RouteConfig(
        prefix="/v1/products", upstream="catalog", scope="catalog:write", idempotent_post=True
    ),
    # The order status stream (API.md): its own http_route, and the scope checked here.
    RouteConfig(
        prefix="/v1/orders/{id}/events", upstream="orders", methods=("GET",), scope="orders:read"
    ),
    RouteConfig(prefix="/v1/orders", upstream="orders", idempotent_post=True),
)

DEFAULT_POLICIES = {
    "user": PolicyConfig(quota=1200, window=60),
    "anonymous": PolicyConfig(quota=1200, window=60),
    "token": PolicyConfig(quota=20, window=60),
}


class GatewaySettings(ProcessSettings):
    """Settings of the gateway."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", extra="ignore")
    service_name: ClassVar[str] = "gateway"

    port: int = 8000
    upstreams: dict[str, UpstreamConfig] = Field(default_factory=lambda: dict(DEFAULT_UPSTREAMS))
    routes: tuple[RouteConfig, ...] = DEFAULT_ROUTES
    rate_limits: dict[str, PolicyConfig] = Field(default_factory=lambda: dict(DEFAULT_POLICIES))
    #: Off only for measurements (bench/): production always limits.
    rate_limiting: bool = True
    #: Shared counters for every replica; without it each replica counts on its own.
    redis_url: str | None = None
    #: Seconds a rate-limit decision may take in Redis (pool wait included) before this
    #: replica counts in-process; measured p99 under a 256-request burst on a loaded 2-core
    #: machine is ~25 ms, so 250 ms is a real fault, not scheduling noise.
    redis_timeout_seconds: float = Field(default=0.25, gt=0)
    #: Key prefix of the counters (one per deployment sharing a Redis).
    redis_prefix: str = "bazaar:ratelimit:"
    #: Peers (IPs or CIDRs) whose X-Forwarded-For is believed.
    trusted_proxies: tuple[str, ...] = ()
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Bytes of request bodies the gateway holds at once, all clients together (each body
    #: is held from its first byte until its upstream answered). Stalled uploads are cut to
    #: make room (bazaar.gateway.body); a body that still finds none is answered 503.
    body_budget_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    cors_origins: tuple[str, ...] = ()
    #: Seconds in-flight requests get to finish on SIGTERM (open event streams end at once).
    shutdown_timeout: float = Field(default=20.0, ge=0)
    #: Event streams (text/event-stream answers) one caller may hold open on this replica;
    #: one more is answered 429 (API.md: 20).
    max_streams_per_user: int = Field(default=20, ge=1)
    #: Verified tokens remembered (until they expire) so each is checked once, not per request.
    token_cache_size: int = Field(default=10_000, ge=0)
    #: Request headers larger than this in all (names and values) are answered 431; so is
    #: any single header line that long (the parser stops reading it there).
    max_header_bytes: int = Field(default=32 * 1024, ge=16 * 1024, le=1024 * 1024)
    #: Seconds a client connection may go without a complete request head, idle between
    #: requests or sending one slowly, before it is closed (nginx's and run_app's 75 s).
    keepalive_timeout: float = Field(default=75.0, gt=0)
    #: Connections to Redis per replica; a decision waits for a free one (within
    #: redis_timeout_seconds) instead of failing, and one connection serves all decisions
    #: of an event-loop turn.
    redis_max_connections: int = Field(default=16, ge=1)
    #: The shared cache of public product reads (API.md "Caching at the edge"; gateway
    #: README): in Redis (`redis_url`) when set, in-process otherwise.
    cache_enabled: bool = True
    #: An upstream's `s-maxage` above this many seconds is cut to it.
    cache_max_ttl_seconds: int = Field(default=300, ge=1, le=86_400)
    #: Larger answers are passed on, not stored (answers over 64 KiB are streamed, never stored).
    cache_max_entry_bytes: int = Field(default=256 * 1024, ge=1024)
    #: Entries and bytes the in-process cache holds at most (least recently used go first).
    cache_max_entries: int = Field(default=10_000, ge=1)
    cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    #: Key prefix of the cache's entries in Redis (apart from the rate limiter's counters).
    cache_redis_prefix: str = "bazaar:cache:"
    #: RabbitMQ URL (with its vhost) of the `catalog.*` events that invalidate the cache.
    #: None: no events, so cached answers are served at most 1 s old.
    amqp_url: SecretStr | None = None
