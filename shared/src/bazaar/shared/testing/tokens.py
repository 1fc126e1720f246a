"""Test tokens: an issuer with real keys, a live JWKS endpoint, and verifier settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from bazaar.shared.auth.verifier import VerifierSettings

JWKS_PATH = "/.well-known/jwks.json"
KeyKind = Literal["rsa", "ec"]


@dataclass(frozen=True)
class SigningKey:
    """One private signing key and the id it is published under."""

    kid: str
    alg: str
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    def public_jwk(self) -> dict[str, Any]:
        """Return the public half as a JWK, as the auth service publishes it."""
        public = self.private_key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        """Return the public key as PEM (what a naive HMAC verifier would use as secret)."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _new_rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


def b64url(data: bytes) -> str:
    """Encode as unpadded base64url, the JWS way."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _segment(value: Mapping[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def compact(header: Mapping[str, Any], claims: Mapping[str, Any], signature: bytes = b"") -> str:
    """Assemble a compact JWS by hand, for tokens PyJWT refuses to make."""
    return f"{_segment(header)}.{_segment(claims)}.{b64url(signature)}"


def tamper(token: str, **changes: Any) -> str:
    """Change claims of a signed token but keep its header and signature."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{header}.{_segment({**claims, **changes})}.{signature}"


class TokenIssuer:
    """Issue access tokens as the auth service does, plus the forgeries tests need."""

    ISSUER: ClassVar[str] = "https://auth.bazaar.test"
    AUDIENCE: ClassVar[str] = "bazaar"
    DEFAULT_SCOPES: ClassVar[tuple[str, ...]] = ("catalog:read", "orders:read", "orders:write")

    def __init__(self) -> None:
        self._rsa_keys = [_new_rsa_key("test-rsa-1")]
        self.ec_key = SigningKey("test-ec-1", "ES256", ec.generate_private_key(ec.SECP256R1()))
        self._stranger: SigningKey | None = None

    @property
    def rsa_key(self) -> SigningKey:
        """The current RSA signing key (the newest after a rotation)."""
        return self._rsa_keys[-1]

    @property
    def keys(self) -> list[SigningKey]:
        """Every published key, old ones included."""
        return [*self._rsa_keys, self.ec_key]

    def jwks(self) -> dict[str, Any]:
        """Return the JWKS document: public keys only."""
        return {"keys": [key.public_jwk() for key in self.keys]}

    def rotate(self) -> SigningKey:
        """Sign with a fresh RSA key from now on; older keys stay published."""
        key = _new_rsa_key(f"test-rsa-{len(self._rsa_keys) + 1}")
        self._rsa_keys.append(key)
        return key

    def claims(
        self,
        subject: str = "user-1",
        scopes: Iterable[str] = DEFAULT_SCOPES,
        *,
        client_id: str = "bazaar-web",
        expires_in: int = 900,
        claims: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Build a token's claims; a None in `claims` removes that claim."""
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.ISSUER,
            "aud": self.AUDIENCE,
            "sub": subject,
            "exp": now + expires_in,
            "iat": now,
            "nbf": now,
            "jti": uuid.uuid4().hex,
            "scope": " ".join(scopes),
            "client_id": client_id,
        }
        body.update(claims or {})
        return {name: value for name, value in body.items() if value is not None}

    def issue(
        self,
        subject: str = "user-1",
        scopes: Iterable[str] = DEFAULT_SCOPES,
        *,
        client_id: str = "bazaar-web",
        key: KeyKind = "rsa",
        expires_in: int = 900,
        headers: Mapping[str, Any] | None = None,
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """Issue a valid `at+jwt`; `headers`/`claims` override or add (None removes)."""
        signing_key = self.rsa_key if key == "rsa" else self.ec_key
        body = self.claims(
            subject, scopes, client_id=client_id, expires_in=expires_in, claims=claims
        )
        return self.sign(body, signing_key, headers=headers)

    def sign(
        self,
        claims: Mapping[str, Any],
        key: SigningKey,
        *,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        """Sign claims with a key, under its kid unless `headers` says otherwise."""
        # PyJWT drops a header whose value is None only for `typ`; do it for all of them.
        header = {"typ": "at+jwt", "kid": key.kid, **(headers or {})}
        header = {name: value for name, value in header.items() if value is not None}
        if "typ" not in header:
            header["typ"] = None  # tells PyJWT to leave its default "JWT" out
        return jwt.encode(dict(claims), key.private_key, algorithm=key.alg, headers=header)

    def unsigned(self, **overrides: Any) -> str:
        """Forge an `alg: none` token with otherwise valid claims."""
        header = {"alg": "none", "typ": "at+jwt", "kid": self.rsa_key.kid}
        return compact(header, self.claims(**overrides))

    def hmac_with_public_key(self, **overrides: Any) -> str:
        """Forge an HS256 token whose HMAC secret is the RSA public key PEM."""
        header = {"alg": "HS256", "typ": "at+jwt", "kid": self.rsa_key.kid}
        head, body, _ = compact(header, self.claims(**overrides)).split(".")
        mac = hmac.new(self.rsa_key.public_pem(), f"{head}.{body}".encode(), hashlib.sha256)
        return f"{head}.{body}.{b64url(mac.digest())}"

    @property
    def stranger(self) -> SigningKey:
        """A key the issuer never published (generated on first use)."""
        if self._stranger is None:
            self._stranger = _new_rsa_key("stranger-1")
        return self._stranger

    def by_stranger(
        self, kid: str = "test-rsa-1", *, headers: Mapping[str, Any] | None = None, **overrides: Any
    ) -> str:
        """Sign with the unpublished key while claiming a published key's kid."""
        return self.sign(
            self.claims(**overrides), self.stranger, headers={"kid": kid, **(headers or {})}
        )


@dataclass
class ManualClock:
    """A monotonic clock that moves only when told, for TTL tests without sleeping."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


@dataclass
class JwksServer:
    """A live JWKS endpoint: its URL, how often it was fetched, and an outage switch."""

    url: str = ""
    hits: int = 0
    failing: bool = False

    @contextmanager
    def down(self) -> Iterator[None]:
        """Answer 503 inside the block, as an auth service outage would."""
        self.failing = True
        try:
            yield
        finally:
            self.failing = False


@pytest.fixture(scope="session")
def token_issuer() -> TokenIssuer:
    """The session's token issuer (RSA and EC keys, generated once)."""
    return TokenIssuer()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def jwks_server(token_issuer: TokenIssuer) -> AsyncIterator[JwksServer]:
    """Serve the issuer's current JWKS over real HTTP on 127.0.0.1."""
    server = JwksServer()

    async def serve_jwks(_request: web.Request) -> web.Response:
        server.hits += 1
        if server.failing:
            return web.json_response({"error": "unavailable"}, status=503)
        return web.json_response(token_issuer.jwks())

    app = web.Application()
    app.router.add_get(JWKS_PATH, serve_jwks)
    # A short shutdown timeout: a keep-alive connection left open must not stall the run.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        server.url = f"http://{host}:{port}{JWKS_PATH}"
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
def verifier_settings(jwks_server: JwksServer) -> VerifierSettings:
    """Verifier settings that trust the test issuer and its JWKS endpoint."""
    return VerifierSettings(
        jwks_url=jwks_server.url, issuer=TokenIssuer.ISSUER, audience=TokenIssuer.AUDIENCE
    )
