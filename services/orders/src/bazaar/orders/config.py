"""Orders settings (environment prefix ORDERS_)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from bazaar.shared.settings import ServiceSettings


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
    #: Consecutive failures that open catalog's breaker, and how long it stays open.
    catalog_breaker_fail_max: int = Field(default=5, ge=1)
    catalog_breaker_reset_seconds: float = Field(default=10.0, gt=0)

    reconcile_interval_seconds: float = Field(default=1.0, gt=0)
    reconcile_batch_size: int = Field(default=50, ge=1)
    #: First pause before the reconciler retries an order; doubles per attempt up to the max.
    reconcile_backoff_seconds: float = Field(default=1.0, gt=0)
    reconcile_max_backoff_seconds: float = Field(default=30.0, gt=0)
    #: A pending order that cannot be settled within this age is rejected.
    pending_max_age_seconds: float = Field(default=900.0, gt=0)
