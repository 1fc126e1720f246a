"""A cache of the auth service's signing keys, fetched from its JWKS document."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal

import httpx
import jwt

from bazaar.shared.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(connect=2.0, read=3.0, write=3.0, pool=2.0)
SUPPORTED_KEY_TYPES = frozenset({"RSA", "EC"})


class JwksCache:
    """Signing keys by `kid`, refreshed on a TTL and (rate-limited) on an unknown `kid`."""

    def __init__(
        self,
        url: str,
        *,
        algorithms: Collection[str] = ("RS256", "ES256"),
        ttl_seconds: float = 300,
        min_refetch_seconds: float = 30,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._algorithms = frozenset(algorithms)
        self._ttl = ttl_seconds
        self._min_refetch = min_refetch_seconds
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=DEFAULT_TIMEOUT)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at: float | None = None
        self._miss_fetched_at: float | None = None
        self._failed_at: float | None = None
        self._refresh: asyncio.Task[None] | None = None

    async def get(self, kid: str) -> jwt.PyJWK | None:
        """Return the key for `kid`, fetching the key set if it is stale or lacks that kid.

        A known kid is answered from the cache at once, even when the set is stale: the
        refresh then runs in the background, so a slow auth service never stalls requests.
        Only an unknown kid waits for a fetch.
        """
        key = self._keys.get(kid)
        if key is not None:
            if not self._is_fresh(self._clock()):
                self._refresh_in_background()
            return key
        await self._fetch_if_needed(kid)
        # After a failed fetch these are the last good keys, stale or not: an auth
        # service outage must not log everybody out.
        return self._keys.get(kid)

    async def refreshed(self) -> None:
        """Wait for a background refresh in progress, if any (tests, shutdown)."""
        if self._refresh is not None:
            await asyncio.shield(self._refresh)

    def _refresh_in_background(self) -> None:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._fetch_if_needed(None))

    async def _fetch_if_needed(self, kid: str | None) -> None:
        async with self._lock:
            # Single flight: whoever waited here while another fetched now finds the new
            # key set, or finds the refetch interval closed, and does not fetch again.
            now = self._clock()
            reason = self._fetch_reason(kid, now)
            if reason == "unknown kid":
                self._miss_fetched_at = now
            if reason is not None:
                await self._fetch(now)

    async def aclose(self) -> None:
        """Stop a background refresh and close the HTTP client, if this cache created it."""
        if self._refresh is not None:
            await cancel_and_wait(self._refresh)
        if self._owns_client:
            await self._client.aclose()

    def _is_fresh(self, now: float) -> bool:
        return self._loaded_at is not None and now - self._loaded_at < self._ttl

    def _fetch_reason(self, kid: str | None, now: float) -> Literal["stale", "unknown kid"] | None:
        # After a failure, wait before asking again rather than hammer a struggling service.
        if self._failed_at is not None and now - self._failed_at < self._min_refetch:
            return None
        if not self._is_fresh(now):
            return "stale"
        if kid is None or kid in self._keys:
            return None
        # Unknown kids are attacker-controlled: without this floor every forged token
        # would become a request to the auth service. A rotation is still picked up at
        # once, because the floor counts only refetches caused by unknown kids.
        if self._miss_fetched_at is not None and now - self._miss_fetched_at < self._min_refetch:
            return None
        return "unknown kid"

    async def _fetch(self, now: float) -> None:
        try:
            response = await self._client.get(self._url, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            self._failed_at = now
            logger.warning("JWKS fetch from %s failed: %s", self._url, type(exc).__name__)
            return
        keys = parse_jwks(document, self._algorithms)
        if not keys:
            # Replacing good keys with none would reject every token; treat it as a failure.
            self._failed_at = now
            logger.warning("JWKS document from %s has no usable signing key", self._url)
            return
        self._keys, self._loaded_at, self._failed_at = keys, now, None


def parse_jwks(document: Any, algorithms: Collection[str]) -> dict[str, jwt.PyJWK]:
    """Return the usable public signing keys of a JWKS document, by `kid`."""
    entries = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(entries, list):
        return {}
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries:
        key = _parse_key(entry, algorithms)
        if key is not None and key.key_id is not None:
            keys[key.key_id] = key
    return keys


def _parse_key(entry: Any, algorithms: Collection[str]) -> jwt.PyJWK | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
        return None
    # `use` is optional in RFC 7517; when present it must say the key is for signatures.
    if entry.get("use", "sig") != "sig" or entry.get("kty") not in SUPPORTED_KEY_TYPES:
        return None
    if "d" in entry:  # private key material has no business in a published key set
        return None
    alg = entry.get("alg")
    if alg is not None and alg not in algorithms:
        return None
    try:
        key = jwt.PyJWK(entry)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    # Without `alg`, PyJWK infers one from kty/crv (e.g. ES384 for P-384): check it too.
    return key if key.algorithm_name in algorithms else None
