"""The broker settings: off unless configured, and RabbitMQ's guest account never in production."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from bazaar.shared.messaging import messaging_settings
from bazaar.shared.settings import InsecureProductionSettings, ServiceSettings

PRODUCTION: dict[str, Any] = {
    "environment": "production",
    "database_url": "postgresql://bazaar:Zq81kT4pRodx9@db.internal:5432/widgets",
    "jwt_jwks_url": "https://auth.bazaar.example/.well-known/jwks.json",
}


class BrokerSvcSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BROKERSVC_", env_file=None, extra="ignore")
    service_name: ClassVar[str] = "brokersvc"


def test_without_an_amqp_url_messaging_is_off() -> None:
    assert messaging_settings(BrokerSvcSettings()) is None


def test_the_amqp_url_and_tuning_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BROKERSVC_AMQP_URL", "amqp://app:s3cret-Value@mq.internal:5672/bazaar")
    monkeypatch.setenv("BROKERSVC_CONSUMER_RETRY_DELAYS_MS", "[200, 2000]")
    monkeypatch.setenv("BROKERSVC_CONSUMER_MAX_ATTEMPTS", "7")
    configured = messaging_settings(BrokerSvcSettings())
    assert configured is not None
    assert configured.url == "amqp://app:s3cret-Value@mq.internal:5672/bazaar"
    assert configured.consumer.retry_delays_ms == (200, 2000)
    assert configured.consumer.max_attempts == 7


@pytest.mark.parametrize(
    "url",
    [
        "amqp://guest:guest@127.0.0.1:5672/",
        "amqp://guest:Zq81kT4pRodx9@mq.internal/",
        "amqps://app@mq.internal/bazaar",
        "amqp://mq.internal/",
    ],
)
def test_production_refuses_the_guest_account_or_a_passwordless_broker_url(url: str) -> None:
    with pytest.raises((InsecureProductionSettings, ValidationError)) as refused:
        BrokerSvcSettings(**PRODUCTION, amqp_url=SecretStr(url))
    assert "amqp_url" in str(refused.value)
    assert "guest" not in str(refused.value).replace("amqp_url", "")


def test_production_accepts_a_real_broker_account() -> None:
    settings = BrokerSvcSettings(
        **PRODUCTION, amqp_url=SecretStr("amqps://bazaar:Xr7mQ2vLp9sK@mq.internal:5671/bazaar")
    )
    assert settings.amqp_url is not None


def test_an_empty_retry_schedule_is_refused() -> None:
    with pytest.raises(ValidationError):
        BrokerSvcSettings(consumer_retry_delays_ms=())
