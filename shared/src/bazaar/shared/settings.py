"""The settings base every service extends (pydantic-settings, one env prefix per service)."""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bazaar.shared.auth.verifier import VerifierSettings

#: Values that mark a secret as a development placeholder; production refuses them.
DEVELOPMENT_SECRET_MARKERS = ("dev-", "development", "changeme", "insecure")


class InsecureProductionSettings(ValueError):
    """Production settings carry a development secret or an unsafe switch."""


class ProcessSettings(BaseSettings):
    """Settings every Bazaar process has (the gateway too); subclasses set `env_prefix`."""

    # hide_input_in_errors: a refusal must never print the secrets it was given.
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    #: The service's name, used in logs, metrics, traces and event sources.
    service_name: ClassVar[str] = "bazaar"
    #: Whether the JWKS is fetched over the network (auth reads its own keys in-process).
    fetches_jwks: ClassVar[bool] = True

    environment: Literal["development", "test", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    #: Request bodies above this many bytes are refused with 413 before they are read whole.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)

    jwt_jwks_url: str = "http://127.0.0.1:8001/.well-known/jwks.json"
    jwt_issuer: str = "http://localhost:8000"
    jwt_audience: str = "bazaar"
    jwt_algorithms: tuple[str, ...] = ("RS256", "ES256")
    jwt_leeway_seconds: float = Field(default=10.0, ge=0, le=60)

    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )

    @model_validator(mode="after")
    def _refuse_development_secrets_in_production(self) -> Self:
        if self.environment == "production":
            problems = list(self.insecure_values())
            if problems:
                raise InsecureProductionSettings(
                    "refusing to start in production with development values: "
                    + ", ".join(problems)
                )
        return self

    def insecure_values(self) -> list[str]:
        """Name every setting that must not reach production as it is."""
        bad: list[str] = []
        for name, value in self:
            if isinstance(value, SecretStr) and is_development_secret(value):
                bad.append(name)
        if (
            self.fetches_jwks
            and not self.jwt_jwks_url.startswith("https://")
            and not _is_cluster_local(self.jwt_jwks_url)
        ):
            bad.append("jwt_jwks_url (must be https or cluster-local)")
        return bad

    def verifier_settings(self) -> VerifierSettings:
        """The JWT verifier's settings derived from these."""
        return VerifierSettings(
            jwks_url=self.jwt_jwks_url,
            issuer=self.jwt_issuer,
            audience=self.jwt_audience,
            algorithms=self.jwt_algorithms,
            leeway_seconds=self.jwt_leeway_seconds,
        )


class ServiceSettings(ProcessSettings):
    """Settings of a service with a database; subclasses set `env_prefix` (e.g. CATALOG_)."""

    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/bazaar")
    db_pool_min: int = Field(default=1, ge=0)
    db_pool_max: int = Field(default=10, ge=1)
    db_acquire_timeout: float = Field(default=5.0, gt=0)
    db_command_timeout: float = Field(default=30.0, gt=0)

    #: The RabbitMQ URL (with its vhost). None: no relay, no consumers — events wait in the
    #: outbox. Tests and `make up` set it explicitly, so no test ever publishes into a shared vhost.
    amqp_url: SecretStr | None = None
    outbox_batch_size: int = Field(default=500, ge=1, le=5000)
    #: The relay wakes on NOTIFY; this is the fallback poll (and the back-off after a failure).
    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    #: After a NOTIFY the relay waits this long to publish what committed together at once.
    outbox_linger_seconds: float = Field(default=0.005, ge=0, le=1)
    outbox_retention_hours: float = Field(default=72.0, gt=0)
    consumer_prefetch: int = Field(default=32, ge=1, le=1000)
    #: Failed handler runs before a message is parked (the first delivery counts).
    consumer_max_attempts: int = Field(default=5, ge=1)
    consumer_retry_delays_ms: tuple[int, ...] = Field(default=(1000, 5000, 30000), min_length=1)
    consumer_drain_seconds: float = Field(default=10.0, ge=0)
    inbox_retention_days: float = Field(default=14.0, gt=0)

    def dsn(self) -> str:
        """The database URL as a plain string (it may hold a password)."""
        return self.database_url.get_secret_value()


def is_development_secret(value: SecretStr) -> bool:
    """Whether a secret is a development placeholder (or a credential-less database URL)."""
    raw = value.get_secret_value()
    lowered = raw.lower()
    if any(marker in lowered for marker in DEVELOPMENT_SECRET_MARKERS):
        return True
    if lowered.startswith("amqp"):
        # RabbitMQ's stock account (guest:guest), or no password at all.
        from urllib.parse import urlsplit

        parts = urlsplit(raw)
        return parts.password in (None, "", "guest") or parts.username in (None, "", "guest")
    # A database URL with no credential of any kind only works with trust auth: a local setup.
    return lowered.startswith("postgres") and not _url_has_credentials(raw)


def _url_has_credentials(url: str) -> bool:
    """A password in the URL, libpq's password/cert options, or PGPASSWORD/PGPASSFILE."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    options = parse_qs(parts.query)
    return (
        parts.password is not None
        or any(k in options for k in ("password", "passfile", "sslcert"))
        or any(os.environ.get(k) for k in ("PGPASSWORD", "PGPASSFILE"))
    )


def _is_cluster_local(url: str) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    return host.endswith((".svc", ".svc.cluster.local")) or "." not in host


def settings_dump(settings: BaseSettings) -> dict[str, Any]:
    """Settings as a dict with secrets masked (safe to log)."""
    return {
        k: ("**********" if isinstance(v, SecretStr) else v)
        for k, v in settings.model_dump().items()
    }
