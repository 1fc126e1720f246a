"""Signing keys at rest: the SQL (named constants, rows become KeyRecords) and the encrypted PEM."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from bazaar.auth.domain.keys import KeyRecord
from bazaar.shared.db import rows_affected

#: The advisory lock that serializes key creation and rotation across replicas
#: (an arbitrary constant: the bytes of "bzkeys" read as an integer).
KEYS_LOCK_ID = 0x627A_6B65_7973

LOCK_KEYS = "SELECT pg_advisory_xact_lock($1)"

SELECT_KEYS = """
SELECT kid, alg, public_jwk, activates_at, retired_at, unpublish_at, created_at
FROM signing_key
ORDER BY activates_at, created_at, kid
"""

SELECT_PRIVATE_PEM = "SELECT private_pem FROM signing_key WHERE kid = $1"

INSERT_KEY = """
INSERT INTO signing_key (kid, alg, public_jwk, private_pem, created_at, activates_at)
VALUES ($1, $2, $3, $4, $5, $6)
"""

RETIRE_KEY = "UPDATE signing_key SET retired_at = $2, unpublish_at = $3 WHERE kid = $1"

DELETE_UNPUBLISHED_BEFORE = "DELETE FROM signing_key WHERE unpublish_at < $1"


#: 2048-bit RSA (112-bit security, NIST-approved through 2030) for keys that sign
#: 15-minute tokens and are rotated; ES256 (P-256) is the default anyway.
RSA_KEY_BITS = 2048
#: The only JWK members a published key may carry: never d, p, q, dp, dq, qi.
PUBLIC_JWK_MEMBERS = frozenset({"kty", "kid", "alg", "use", "crv", "x", "y", "n", "e"})

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class SigningKeyUnreadable(RuntimeError):
    """A stored private key cannot be decrypted with the configured passphrase."""


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly generated key: its public JWK and its private half encrypted as PEM."""

    kid: str
    alg: str
    public_jwk: dict[str, Any]
    private_pem: str


def generate_key(alg: str, passphrase: bytes) -> NewKey:
    """Generate a key for `alg` (ES256: P-256; RS256: RSA) and encrypt its private half."""
    private: PrivateKey
    if alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = dict(ECAlgorithm.to_jwk(private.public_key(), as_dict=True))
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
        jwk = dict(RSAAlgorithm.to_jwk(private.public_key(), as_dict=True))
    # Random, not derived from time: a kid tells nothing about when keys were made.
    kid = secrets.token_urlsafe(16)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    public = public_jwk({**jwk, "kid": kid, "alg": alg, "use": "sig"})
    return NewKey(kid, alg, public, pem.decode("ascii"))


def decrypt_key(pem: str, passphrase: bytes, record: KeyRecord) -> PrivateKey:
    """Decrypt a stored private key, or raise SigningKeyUnreadable naming the setting."""
    # The cause is dropped on purpose: nothing of the key may reach an error or a log.
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=passphrase)
    except (ValueError, TypeError):
        raise SigningKeyUnreadable(
            f"signing key {record.kid!r} cannot be decrypted: AUTH_KEY_PASSPHRASE is not the "
            "passphrase the stored keys were encrypted with (or the stored key is damaged)"
        ) from None
    expected = ec.EllipticCurvePrivateKey if record.alg == "ES256" else rsa.RSAPrivateKey
    if not isinstance(key, expected):
        raise SigningKeyUnreadable(f"signing key {record.kid!r} is not an {record.alg} key")
    return key


def public_jwk(jwk: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only the public members of a JWK."""
    return {name: value for name, value in jwk.items() if name in PUBLIC_JWK_MEMBERS}


def _record(row: asyncpg.Record) -> KeyRecord:
    return KeyRecord(**dict(row))


class KeyRepository:
    """Signing keys in PostgreSQL, through one connection of the caller's transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def lock(self) -> None:
        """Hold the key lock until the transaction ends (one writer of keys at a time)."""
        await self.conn.execute(LOCK_KEYS, KEYS_LOCK_ID)

    async def all(self) -> list[KeyRecord]:
        """Every stored key, public halves only, oldest activation first."""
        return [_record(row) for row in await self.conn.fetch(SELECT_KEYS)]

    async def private_pem(self, kid: str) -> str | None:
        """The encrypted private key of `kid`, as stored; None if there is no such key."""
        pem = await self.conn.fetchval(SELECT_PRIVATE_PEM, kid)
        return str(pem) if pem is not None else None

    async def add(
        self,
        *,
        kid: str,
        alg: str,
        public_jwk: Mapping[str, Any],
        private_pem: str,
        created_at: datetime,
        activates_at: datetime,
    ) -> None:
        """Store a new key."""
        await self.conn.execute(
            INSERT_KEY, kid, alg, dict(public_jwk), private_pem, created_at, activates_at
        )

    async def retire(self, key: KeyRecord) -> None:
        """Store a key's new `retired_at` and `unpublish_at`."""
        await self.conn.execute(RETIRE_KEY, key.kid, key.retired_at, key.unpublish_at)

    async def delete_unpublished_before(self, moment: datetime) -> int:
        """Delete the keys that left the JWKS before `moment`; return how many."""
        status = await self.conn.execute(DELETE_UNPUBLISHED_BEFORE, moment)
        return rows_affected(status)
