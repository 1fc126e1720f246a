"""Auth settings (environment prefix AUTH_)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from bazaar.shared.settings import ServiceSettings, is_development_secret

#: The shortest key passphrase production accepts (e.g. 32 random base64 characters).
MIN_KEY_PASSPHRASE = 32


class ClientConfig(BaseModel):
    """A service client of the client-credentials grant, as configured."""

    client_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    secret: SecretStr
    scopes: tuple[str, ...]


class AuthSettings(ServiceSettings):
    """Settings of the auth service."""

    model_config = SettingsConfigDict(env_prefix="AUTH_", env_file=".env", extra="ignore")
    service_name: ClassVar[str] = "auth"

    port: int = 8001
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/bazaar_auth")
    # Auth verifies its own tokens through its own JWKS endpoint, in-process.
    jwt_jwks_url: str = "http://auth.internal/.well-known/jwks.json"
    # Auth reads its own JWKS in-process (app.SELF_BASE_URL), never over the network.
    fetches_jwks: ClassVar[bool] = False

    access_token_ttl_seconds: int = Field(default=900, ge=60, le=3600)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=3600)
    #: The client id written into tokens from the password and refresh grants.
    public_client_id: str = "bazaar-web"

    signing_alg: Literal["ES256", "RS256"] = "ES256"
    #: Encrypts the private signing keys at rest (PEM, best available encryption).
    key_passphrase: SecretStr = SecretStr("dev-key-passphrase")
    #: A rotated-in key is published this long before it signs (>= every JWKS cache's TTL).
    key_activation_delay_seconds: int = Field(default=600, ge=0)
    #: How long a replica trusts its in-memory copy of the key set.
    key_cache_seconds: float = Field(default=10.0, gt=0)
    jwks_max_age_seconds: int = Field(default=300, ge=0)

    admin_email: str = "admin@bazaar.local"
    admin_password: SecretStr = SecretStr("dev-admin-password")
    admin_name: str = "Bazaar Admin"
    clients: tuple[ClientConfig, ...] = (
        ClientConfig(
            client_id="orders",
            secret=SecretStr("dev-orders-client-secret"),
            scopes=("catalog:reserve",),
        ),
    )

    argon2_time_cost: int = Field(default=2, ge=2)
    argon2_memory_kib: int = Field(default=19456, ge=19456)
    argon2_parallelism: int = Field(default=1, ge=1)
    #: Threads that hash passwords (each hash holds argon2_memory_kib of memory).
    hashing_threads: int = Field(default=4, ge=1, le=64)
    #: How long a login may wait for a hashing thread before it is answered 503.
    hashing_max_wait_seconds: float = Field(default=5.0, gt=0)

    #: Failed logins of one account allowed before each further attempt must wait.
    login_failures_before_delay: int = Field(default=5, ge=1)
    login_delay_max_seconds: int = Field(default=900, ge=1)

    def insecure_values(self) -> list[str]:
        """Also refuse development client secrets and a weak key passphrase."""
        bad = super().insecure_values()
        bad += [
            f"clients[{c.client_id}].secret"
            for c in self.clients
            if is_development_secret(c.secret)
        ]
        # PKCS#8 encryption derives its key with only 2048 PBKDF2 rounds: the passphrase
        # itself must carry the strength (a random secret, not a word).
        if len(self.key_passphrase.get_secret_value()) < MIN_KEY_PASSPHRASE:
            bad.append(f"key_passphrase (needs at least {MIN_KEY_PASSPHRASE} characters)")
        return bad
