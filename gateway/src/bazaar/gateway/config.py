"""Gateway settings (environment prefix GATEWAY_): upstreams, the route table, limits."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from bazaar.shared.settings import ProcessSettings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class UpstreamConfig(BaseModel):
    """One service behind the gateway."""

    url: str
    #: Requests in flight to this upstream at most; more wait briefly, then get 503.
    max_concurrency: int = Field(default=256, ge=1)
    connect_timeout: float = Field(default=1.0, gt=0)
    #: Consecutive failures (connect errors, timeouts, 502/503/504) that open the breaker.
    breaker_failures: int = Field(default=5, ge=1)
    #: Seconds the breaker stays open before one trial request.
    breaker_reset_seconds: float = Field(default=10.0, gt=0)


class RouteConfig(BaseModel):
    """A path prefix (and methods) routed to an upstream, with its rules."""

    prefix: str
    upstream: str
    methods: tuple[str, ...] | None = None  # None: every method
    auth: Literal["public", "token"] = "token"
    scope: str | None = None
    timeout: float = Field(default=10.0, gt=0)
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
    RouteConfig(prefix="/v1/products", upstream="catalog", scope="catalog:write"),
    RouteConfig(prefix="/v1/orders", upstream="orders"),
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
    redis_timeout_seconds: float = Field(default=0.05, gt=0)
    #: Key prefix of the counters (one per deployment sharing a Redis).
    redis_prefix: str = "bazaar:ratelimit:"
    #: Peers (IPs or CIDRs) whose X-Forwarded-For is believed.
    trusted_proxies: tuple[str, ...] = ()
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    cors_origins: tuple[str, ...] = ()
    #: Seconds in-flight requests get to finish on SIGTERM.
    shutdown_timeout: float = Field(default=20.0, ge=0)
    #: Verified tokens remembered (until they expire) so each is checked once, not per request.
    token_cache_size: int = Field(default=10_000, ge=0)
