"""Service settings: one env prefix per service, a production profile that refuses dev values."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from bazaar.shared.settings import InsecureProductionSettings, ServiceSettings, settings_dump

PRODUCTION_PASSWORD = "Zq81kT4pRodx9"
PRODUCTION_SIGNING_KEY = "Wm3vX9qPz7Lk2Rt8hY"
PRODUCTION_VALUES: dict[str, Any] = {
    "environment": "production",
    "database_url": f"postgresql://bazaar:{PRODUCTION_PASSWORD}@db.internal:5432/widgets",
    "jwt_jwks_url": "https://auth.bazaar.example/.well-known/jwks.json",
    "signing_key": PRODUCTION_SIGNING_KEY,
}


class SvcSettings(ServiceSettings):
    """A service with the TESTSVC_ prefix and a secret of its own."""

    model_config = SettingsConfigDict(env_prefix="TESTSVC_", env_file=None, extra="ignore")
    service_name: ClassVar[str] = "testsvc"

    signing_key: SecretStr = SecretStr("dev-signing-key")


class OtherSettings(ServiceSettings):
    """Another service, another prefix."""

    model_config = SettingsConfigDict(env_prefix="OTHERSVC_", env_file=None, extra="ignore")
    service_name: ClassVar[str] = "othersvc"


def build(**values: Any) -> SvcSettings:
    return SvcSettings(_env_file=None, **values)  # type: ignore[call-arg]


def assert_no_part_of(secret: str, text: str) -> None:
    """Not even a fragment: truncated reprs leak a secret's tail just as badly."""
    for start in range(len(secret) - 7):
        assert secret[start : start + 8] not in text, f"a fragment of {secret!r} leaked"


def refusal(excinfo: pytest.ExceptionInfo[ValidationError]) -> InsecureProductionSettings:
    """The InsecureProductionSettings pydantic wrapped (model validators' errors are wrapped)."""
    [error] = excinfo.value.errors()
    cause = error["ctx"]["error"]
    assert isinstance(cause, InsecureProductionSettings)
    return cause


def test_each_subclass_reads_the_environment_under_its_own_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TESTSVC_PORT", "9123")
    monkeypatch.setenv("TESTSVC_DATABASE_URL", "postgresql://u:p@db.test:5432/testsvc")

    mine = build()
    other = OtherSettings(_env_file=None)  # type: ignore[call-arg]

    assert mine.port == 9123
    assert mine.dsn() == "postgresql://u:p@db.test:5432/testsvc"
    assert other.port == 8000
    assert other.dsn() != mine.dsn()


def test_an_environment_variable_without_the_prefix_is_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTHERSVC_PORT", "9999")

    assert build().port == 8000


def test_production_accepts_proper_values() -> None:
    settings = build(**PRODUCTION_VALUES)

    assert settings.environment == "production"
    assert settings.insecure_values() == []


@pytest.mark.parametrize(
    "jwks_url",
    [
        "http://auth.bazaar.svc.cluster.local:8001/.well-known/jwks.json",
        "http://auth.bazaar.svc:8001/.well-known/jwks.json",
        "http://auth:8001/.well-known/jwks.json",
    ],
)
def test_production_accepts_a_cluster_local_http_jwks_url(jwks_url: str) -> None:
    settings = build(**{**PRODUCTION_VALUES, "jwt_jwks_url": jwks_url})

    assert settings.jwt_jwks_url == jwks_url


def test_production_accepts_a_database_password_given_in_the_query() -> None:
    url = f"postgresql://bazaar@db.internal:5432/widgets?password={PRODUCTION_PASSWORD}"

    assert build(**{**PRODUCTION_VALUES, "database_url": url}).dsn() == url


@pytest.fixture(autouse=True)
def _no_libpq_credentials_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whether a URL lacks a credential depends on these; a developer's shell may set them.
    for name in ("PGPASSWORD", "PGPASSFILE"):
        monkeypatch.delenv(name, raising=False)


def test_production_accepts_a_passwordless_url_when_libpq_has_the_credential(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "postgresql://bazaar@db.internal:5432/widgets"
    monkeypatch.setenv("PGPASSWORD", PRODUCTION_PASSWORD)
    assert build(**{**PRODUCTION_VALUES, "database_url": url}).dsn() == url
    monkeypatch.delenv("PGPASSWORD")
    cert = url + "?sslmode=verify-full&sslcert=/var/run/secrets/db/tls.crt"
    assert build(**{**PRODUCTION_VALUES, "database_url": cert}).dsn() == cert


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"signing_key": "dev-signing-key"}, "signing_key"),
        ({"signing_key": "changeme"}, "signing_key"),
        ({"signing_key": "an-INSECURE-one"}, "signing_key"),
        ({"database_url": "postgresql://bazaar@db.internal:5432/widgets"}, "database_url"),
        ({"database_url": "postgres://bazaar@db.internal/widgets"}, "database_url"),
        ({"database_url": "postgresql://bazaar:dev-password@db/widgets"}, "database_url"),
        ({"jwt_jwks_url": "http://auth.bazaar.example/.well-known/jwks.json"}, "jwt_jwks_url"),
    ],
    ids=[
        "dev-secret",
        "changeme-secret",
        "insecure-secret",
        "passwordless-postgresql-url",
        "passwordless-postgres-url",
        "dev-password-url",
        "plain-http-public-jwks",
    ],
)
def test_production_refuses_a_development_value(override: dict[str, str], named: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        build(**{**PRODUCTION_VALUES, **override})

    assert named in str(refusal(excinfo))


def test_production_names_every_development_value_at_once() -> None:
    with pytest.raises(ValidationError) as excinfo:
        build(environment="production")

    message = str(refusal(excinfo))
    for name in ("signing_key", "database_url", "jwt_jwks_url"):
        assert name in message


def test_production_refusal_read_from_the_environment_raises_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TESTSVC_ENVIRONMENT", "production")

    with pytest.raises(ValidationError) as excinfo:
        build()

    assert "signing_key" in str(refusal(excinfo))


def test_a_production_refusal_does_not_echo_any_secret_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The refusal is what a crashing pod prints to its log: it may name settings, never
    # show their values (DESIGN.md: secrets never appear in logs).
    for name, value in {**PRODUCTION_VALUES, "jwt_jwks_url": "http://auth.example/jwks"}.items():
        monkeypatch.setenv(f"TESTSVC_{name.upper()}", value)

    with pytest.raises(ValidationError) as excinfo:
        build()

    printed = str(excinfo.value) + repr(excinfo.value)
    assert "jwt_jwks_url" in printed
    assert_no_part_of(PRODUCTION_PASSWORD, printed)
    assert_no_part_of(PRODUCTION_SIGNING_KEY, printed)


@pytest.mark.parametrize("environment", ["development", "test"])
def test_development_and_test_profiles_accept_development_values(environment: str) -> None:
    settings = build(
        environment=environment,
        signing_key="dev-signing-key",
        database_url="postgresql://postgres@127.0.0.1:5432/widgets",
        jwt_jwks_url="http://127.0.0.1:8001/.well-known/jwks.json",
    )

    assert settings.environment == environment
    assert set(settings.insecure_values()) >= {"signing_key", "database_url"}


def test_settings_dump_masks_every_secret() -> None:
    settings = build(**PRODUCTION_VALUES, port=8123)

    dump = settings_dump(settings)

    assert dump["database_url"] == "**********"
    assert dump["signing_key"] == "**********"
    assert dump["port"] == 8123
    assert dump["jwt_jwks_url"] == PRODUCTION_VALUES["jwt_jwks_url"]
    logged = json.dumps(dump, default=str)
    assert_no_part_of(PRODUCTION_PASSWORD, logged)
    assert_no_part_of(PRODUCTION_SIGNING_KEY, logged)
