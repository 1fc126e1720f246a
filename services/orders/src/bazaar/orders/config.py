"""Orders settings (environment prefix ORDERS_)."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from bazaar.shared.settings import ServiceSettings

#: Database connections of the pool the reconciler never takes: requests always find one.
DB_CONNECTIONS_FOR_REQUESTS = 2


class OrdersSettings(ServiceSettings):
    """Settings of the orders service."""

    model_config = SettingsConfigDict(env_prefix="ORDERS_", env_file=".env", extra="ignore")
    service_name: ClassVar[str] = "orders"

    port: int = 8003
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/bazaar_orders")

    #: Where catalog serves its (internal) reservation routes.
    catalog_url: str = "http://127.0.0.1:8002"
    #: Where auth serves its token endpoint (/v1/auth/token).
    auth_url: str = "http://127.0.0.1:8001"
    #: This service's OAuth client (client_credentials grant), known to auth.
    client_id: str = "orders"
    client_secret: SecretStr = SecretStr("dev-orders-client-secret")

    catalog_connect_timeout_seconds: float = Field(default=1.0, gt=0)
    catalog_read_timeout_seconds: float = Field(default=2.0, gt=0)
    #: The whole catalog call, all attempts included.
    catalog_deadline_seconds: float = Field(default=4.0, gt=0)
    catalog_attempts: int = Field(default=3, ge=1, le=10)
    catalog_pool_size: int = Field(default=100, ge=1)
    #: Seconds an idle pooled connection to catalog or auth is kept: below their servers'
    #: keep-alive (5 s, KEEP_ALIVE_SECONDS), so no call goes out on a connection they closed.
    upstream_pool_idle_seconds: float = Field(default=2.0, gt=0)
    #: Consecutive failures that open catalog's breaker.
    catalog_breaker_fail_max: int = Field(default=5, ge=1)
    #: The pause before the first trial once it opened; each failed trial doubles it up to
    #: the max (each pause drawn at 0.5-1x), so orders follows catalog back within about a
    #: second of a brief fault and asks a long-dead one once per max at most.
    catalog_breaker_reset_seconds: float = Field(default=0.5, gt=0)
    catalog_breaker_max_reset_seconds: float = Field(default=2.0, gt=0)

    reconcile_interval_seconds: float = Field(default=1.0, gt=0)
    #: The most orders the reconciler leases in one statement.
    reconcile_batch_size: int = Field(default=50, ge=1)
    #: Orders the reconciler settles at once (one catalog call each), per replica. Well
    #: inside `catalog_pool_size`, so placements still find connections while a backlog drains;
    #: 16 drains as fast as 32 (bench/reconciler.py) with half the load on catalog's pool.
    reconcile_concurrency: int = Field(default=16, ge=1)
    #: First pause before the reconciler retries an order; doubles per attempt up to the max.
    reconcile_backoff_seconds: float = Field(default=1.0, gt=0)
    reconcile_max_backoff_seconds: float = Field(default=30.0, gt=0)
    #: A pending order older than this is rejected once catalog, answering others, still
    #: cannot answer for it; never while catalog is unreachable.
    pending_max_age_seconds: float = Field(default=900.0, gt=0)

    #: An order status stream with nothing to send sends a keep-alive comment this often
    #: (API.md: one at least every 15 s).
    stream_keepalive_seconds: float = Field(default=10.0, gt=0, le=15)
    #: The database of the one LISTEN connection behind status streams, when not
    #: `database_url`: LISTEN needs a session of its own, so not through a proxy that pools
    #: connections per transaction.
    listen_database_url: SecretStr | None = None

    @model_validator(mode="after")
    def _leave_catalog_connections_to_requests(self) -> Self:
        if self.reconcile_concurrency >= self.catalog_pool_size:
            raise ValueError("reconcile_concurrency must be smaller than catalog_pool_size")
        return self

    def listen_dsn(self) -> str:
        """The URL of the status streams' LISTEN connection (it may hold a password)."""
        url = self.listen_database_url or self.database_url
        return url.get_secret_value()

    @property
    def reconcile_db_connections(self) -> int:
        """Connections the reconciler uses at once: the pool but those kept for requests."""
        return max(1, self.db_pool_max - DB_CONNECTIONS_FOR_REQUESTS)

    @property
    def reconcile_work_seconds(self) -> float:
        """The longest the reconciler works on one order: two catalog calls and a transaction."""
        return 2 * self.catalog_deadline_seconds + 1.0
