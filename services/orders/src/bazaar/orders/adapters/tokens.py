"""A service token from auth's client_credentials grant, cached until shortly before it expires."""

from __future__ import annotations

import asyncio
import logging
import time
from base64 import b64encode
from urllib.parse import quote_plus

import aiohttp

log = logging.getLogger("bazaar.orders.tokens")

#: Refresh this long before `expires_in` runs out, so a token never expires mid-flight.
EXPIRY_MARGIN_SECONDS = 30.0
#: Auth's token endpoint, under auth's base URL (contracts/pacts/orders-auth.json).
TOKEN_PATH = "/v1/auth/token"  # noqa: S105 - a path, not a secret
#: The scope orders asks for: reserving and releasing stock at catalog.
SERVICE_SCOPE = "catalog:reserve"


class TokenUnavailable(Exception):
    """Auth could not issue a service token (down, or the client is refused)."""


class ServiceTokens:
    """One cached access token for this service; fetched once however many callers wait."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._session = session
        self._token_url = token_url
        self._form = {"grant_type": "client_credentials"}
        if scope:
            self._form["scope"] = scope
        # RFC 6749 §2.3.1: each half is form-urlencoded before they are joined.
        credentials = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
        self._headers = {"Authorization": "Basic " + b64encode(credentials.encode()).decode()}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        """A valid access token: the cached one, or a fresh one."""
        if self._token is not None and time.monotonic() < self._expires_at:
            return self._token
        async with self._lock:
            if self._token is None or time.monotonic() >= self._expires_at:
                await self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget `token` (the callee refused it); the next `get` fetches another."""
        if self._token == token:
            self._token = None

    async def _fetch(self) -> None:
        try:
            async with self._session.post(
                self._token_url, data=self._form, headers=self._headers, timeout=self._timeout
            ) as response:
                body = await response.json(content_type=None)
                if response.status != 200:
                    error = body.get("error") if isinstance(body, dict) else None
                    raise TokenUnavailable(f"auth answered {response.status} ({error})")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise TokenUnavailable(f"auth could not be asked: {exc!r}") from exc
        try:
            lifetime = float(body.get("expires_in", 300))
            token = str(body["access_token"])
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise TokenUnavailable("auth answered 200 without an access token") from exc
        self._token = token
        self._expires_at = time.monotonic() + max(lifetime - EXPIRY_MARGIN_SECONDS, lifetime / 2)
        log.info("service token refreshed", extra={"expires_in": lifetime})


def service_tokens(
    session: aiohttp.ClientSession, *, auth_url: str, client_id: str, client_secret: str
) -> ServiceTokens:
    """Orders' service tokens from auth at `auth_url` (its base URL): the token endpoint and
    scope orders uses, in one place for the app and the contract tests."""
    return ServiceTokens(
        session,
        token_url=auth_url.rstrip("/") + TOKEN_PATH,
        client_id=client_id,
        client_secret=client_secret,
        scope=SERVICE_SCOPE,
    )
