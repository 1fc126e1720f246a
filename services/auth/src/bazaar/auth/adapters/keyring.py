"""The key ring: persisted signing keys, encrypted at rest, rotated without breaking tokens.

Timing contract: `key_activation_delay_seconds` must exceed `key_cache_seconds` (how long a
replica may go on using its copy of the key set) plus every JWKS cache's TTL (our own
`Cache-Control: max-age`, and any verifier's or proxy's), or a verifier could meet a token
signed with a key it cannot have fetched yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import jwt

from bazaar.auth.adapters.keys import (
    KeyRepository,
    NewKey,
    PrivateKey,
    SigningKeyUnreadable,
    decrypt_key,
    generate_key,
    public_jwk,
)
from bazaar.auth.config import AuthSettings
from bazaar.auth.domain.keys import (
    KeyRecord,
    published_at,
    retire_predecessors,
    rotation_schedule,
    signing_key_at,
)
from bazaar.shared.db import Database, DatabaseBusy

__all__ = ["KeyRing", "NoSigningKey", "SigningKeyUnreadable", "safe_activation_delay"]

log = logging.getLogger("bazaar.auth.keys")

#: Keys that left the JWKS are deleted by the next rotation after this long.
KEY_RETENTION = timedelta(days=1)
_REFRESH_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    DatabaseBusy,
)


class NoSigningKey(RuntimeError):
    """No key signs now (the key ring was not set up with `ensure_key`)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def safe_activation_delay(settings: AuthSettings) -> timedelta:
    """The shortest activation delay that lets every replica and our JWKS caches see a key."""
    return timedelta(seconds=settings.key_cache_seconds + settings.jwks_max_age_seconds)


class KeyRing:
    """Signs access tokens with the current key and publishes the key set (JWKS)."""

    def __init__(
        self,
        db: Database,
        settings: AuthSettings,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._passphrase = settings.key_passphrase.get_secret_value().encode()
        if not self._passphrase:
            raise ValueError("AUTH_KEY_PASSPHRASE must not be empty")
        self._db = db
        self._settings = settings
        self._clock = clock
        self._cache_ttl = timedelta(seconds=settings.key_cache_seconds)
        self._records: list[KeyRecord] = []
        self._loaded_at: datetime | None = None
        # Decrypted once per key and process, dropped once the key can no longer sign.
        self._private: dict[str, PrivateKey] = {}
        self._refresh_lock = asyncio.Lock()
        self._decrypt_lock = asyncio.Lock()

    @property
    def _grace_leeway(self) -> timedelta:
        # Verifiers accept a token `jwt_leeway_seconds` past `exp`; and a replica whose
        # cached key set predates a rotation may sign with the old key for up to
        # `key_cache_seconds` after it retired (only if activation came sooner than that).
        seconds = self._settings.jwt_leeway_seconds + self._settings.key_cache_seconds
        return timedelta(seconds=seconds)

    async def ensure_key(self) -> None:
        """Create a key that signs at once if none does; decrypt the keys that will sign."""
        now = self._clock()
        async with self._db.transaction() as conn:
            keys = KeyRepository(conn)
            await keys.lock()  # replicas starting together: one creates, the others see it
            if signing_key_at(await keys.all(), now) is None:
                key = await self._add(keys, now, activates_at=now)
                log.info("created signing key", extra={"kid": key.kid, "alg": key.alg})
        self._loaded_at = None
        # A wrong AUTH_KEY_PASSPHRASE stops the start-up here, not the first login.
        for record in await self._current(now):
            if record.retired_at is None or now < record.retired_at:
                await self._private_key(record)

    async def rotate(self, activate_in: timedelta) -> str:
        """Publish a new key that signs after `activate_in`; schedule its predecessors' end."""
        now = self._clock()
        ttl = timedelta(seconds=self._settings.access_token_ttl_seconds)
        schedule = rotation_schedule(now, activate_in, ttl, self._grace_leeway)
        async with self._db.transaction() as conn:
            keys = KeyRepository(conn)
            await keys.lock()
            existing = await keys.all()
            current = signing_key_at(existing, now)
            if current is not None:
                # A key under another passphrase would fail only when it starts signing.
                await self._private_key(current, keys)
                if activate_in < safe_activation_delay(self._settings):
                    log.warning(
                        "new signing key activates before every cache can have fetched it",
                        extra={"activate_in": activate_in.total_seconds()},
                    )
            for retired in retire_predecessors(existing, schedule, now):
                await keys.retire(retired)
            key = await self._add(keys, now, activates_at=schedule.activates_at)
            await keys.delete_unpublished_before(now - KEY_RETENTION)
        self._loaded_at = None
        log.info(
            "rotated signing key",
            extra={"kid": key.kid, "alg": key.alg, "activates_at": schedule.activates_at},
        )
        return key.kid

    async def revoke(self, kid: str) -> str | None:
        """Withdraw a compromised key at once: it leaves the JWKS and never signs again.

        If it was the key signing now, a new key takes over immediately (no delay: the old
        one must not sign a moment longer). Returns that new kid, if one was needed.
        Verifiers drop the key when their JWKS cache expires (`jwks_max_age_seconds`).
        """
        now = self._clock()
        async with self._db.transaction() as conn:
            keys = KeyRepository(conn)
            await keys.lock()
            existing = await keys.all()
            target = next((k for k in existing if k.kid == kid), None)
            if target is None:
                raise KeyError(kid)
            withdrawn = replace(target, retired_at=now, unpublish_at=now)
            await keys.retire(withdrawn)
            others = [withdrawn if k.kid == kid else k for k in existing]
            replacement = None
            if signing_key_at(others, now) is None:
                replacement = await self._add(keys, now, activates_at=now)
        self._loaded_at = None
        self._private.pop(kid, None)
        log.warning("revoked signing key", extra={"kid": kid})
        return replacement.kid if replacement else None

    async def sign(self, claims: Mapping[str, Any]) -> str:
        """Encode the claims as an `at+jwt` signed with the key that signs now."""
        now = self._clock()
        record = signing_key_at(await self._current(now), now)
        if record is None:
            raise NoSigningKey("no signing key is active; KeyRing.ensure_key() was not run")
        private = await self._private_key(record)
        headers = {"kid": record.kid, "typ": "at+jwt"}
        return jwt.encode(dict(claims), private, algorithm=record.alg, headers=headers)

    async def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """Return the JWKS document: the public halves of the published keys."""
        now = self._clock()
        keys = published_at(await self._current(now), now)
        return {"keys": [public_jwk(key.public_jwk) for key in keys]}

    async def keys(self) -> list[KeyRecord]:
        """Return every stored key as it is in the database now (public halves only)."""
        async with self._db.connection() as conn:
            return await KeyRepository(conn).all()

    async def _add(self, keys: KeyRepository, now: datetime, *, activates_at: datetime) -> NewKey:
        key = await asyncio.to_thread(generate_key, self._settings.signing_alg, self._passphrase)
        await keys.add(
            kid=key.kid,
            alg=key.alg,
            public_jwk=key.public_jwk,
            private_pem=key.private_pem,
            created_at=now,
            activates_at=activates_at,
        )
        return key

    def _is_fresh(self, now: datetime) -> bool:
        if self._loaded_at is None:
            return False
        age = now - self._loaded_at
        return timedelta(0) <= age < self._cache_ttl  # a clock that went back counts as stale

    async def _current(self, now: datetime) -> list[KeyRecord]:
        if self._is_fresh(now):
            return self._records
        async with self._refresh_lock:
            if not self._is_fresh(now):  # single flight: a waiter finds the fresh copy
                await self._refresh(now)
        return self._records

    async def _refresh(self, now: datetime) -> None:
        try:
            async with self._db.connection() as conn:
                records = await KeyRepository(conn).all()
        except _REFRESH_ERRORS:
            if not self._records:
                raise
            # Signing needs no database once keys are decrypted: keep going on the copy.
            log.warning("refreshing the signing keys failed; using the cached key set")
            self._loaded_at = now
            return
        able = {r.kid for r in records if r.retired_at is None or now < r.retired_at}
        self._private = {kid: key for kid, key in self._private.items() if kid in able}
        self._records, self._loaded_at = records, now

    async def _private_key(
        self, record: KeyRecord, keys: KeyRepository | None = None
    ) -> PrivateKey:
        key = self._private.get(record.kid)
        if key is not None:
            return key
        async with self._decrypt_lock:
            key = self._private.get(record.kid)
            if key is None:
                pem = await (keys.private_pem(record.kid) if keys else self._read_pem(record.kid))
                if pem is None:
                    raise NoSigningKey(f"signing key {record.kid!r} is no longer stored")
                key = await asyncio.to_thread(decrypt_key, pem, self._passphrase, record)
                self._private[record.kid] = key
        return key

    async def _read_pem(self, kid: str) -> str | None:
        async with self._db.connection() as conn:
            return await KeyRepository(conn).private_pem(kid)
