"""Fetch every service's ``/openapi.json`` and serve the merged document, cached.

The services are asked concurrently, each within ``timeout`` seconds. The last good document of
each service is kept: a service that is down (refused, hanging, 5xx, not JSON, not OpenAPI)
is served from it, and listed in ``x-bazaar-stale``. A service never fetched yet is left out
and listed in ``x-bazaar-missing``. :meth:`OpenApiAggregator.document` never raises for a
service's failure.

The merged document is cached for ``ttl`` seconds; while a service is missing or stale it is
cached only for ``retry_ttl`` (default: the smaller of ``ttl`` and 5 s), so the docs heal soon
after the service comes back. Concurrent callers share one refresh, and a caller that goes
away (a client disconnecting) does not cancel it for the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp

from bazaar.gateway.docs.merge import merge_openapi

__all__ = ["OpenApiAggregator"]

_log = logging.getLogger("bazaar.gateway.docs")

#: A service document larger than this is refused (the committed ones are ~30 KiB).
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024


class _FetchError(Exception):
    pass


class OpenApiAggregator:
    """The merged OpenAPI document of ``sources`` (service name → URL of its ``/openapi.json``)."""

    def __init__(
        self,
        session: aiohttp.ClientSession | None,
        sources: Mapping[str, str],
        *,
        title: str,
        version: str,
        ttl: float = 60.0,
        timeout: float = 2.0,
        retry_ttl: float | None = None,
        exclude_prefixes: Sequence[str] = ("/v1/reservations",),
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int = MAX_DOCUMENT_BYTES,
    ) -> None:
        if ttl < 0 or timeout <= 0:
            raise ValueError("ttl must be >= 0 and timeout > 0")
        self._session = session  # None until bind(): an app's session exists once it runs
        self._sources = dict(sources)
        self.title = title
        self.version = version
        self._ttl = ttl
        self._retry_ttl = min(ttl, 5.0) if retry_ttl is None else retry_ttl
        self._timeout = timeout
        self._exclude = tuple(exclude_prefixes)
        self._clock = clock
        self._max_bytes = max_bytes

        self._last_good: dict[str, dict[str, Any]] = {}
        self._cached: dict[str, Any] | None = None
        self._expires_at = float("-inf")
        self._refresh: asyncio.Task[dict[str, Any]] | None = None

    @property
    def sources(self) -> Mapping[str, str]:
        return dict(self._sources)

    async def document(self) -> dict[str, Any]:
        """The merged document: cached, else refreshed now. Treat the result as read-only."""
        if self._cached is not None and self._clock() < self._expires_at:
            return self._cached
        task = self._refresh
        if task is None:
            task = asyncio.create_task(self._rebuild(), name="openapi-aggregator-refresh")
            task.add_done_callback(self._refresh_done)
            self._refresh = task
        return await asyncio.shield(task)

    def invalidate(self) -> None:
        """Fetch again on the next :meth:`document` call."""
        self._expires_at = float("-inf")

    def _refresh_done(self, task: asyncio.Task[dict[str, Any]]) -> None:
        if self._refresh is task:
            self._refresh = None
        if not task.cancelled() and task.exception() is not None:
            _log.error("openapi aggregation failed", exc_info=task.exception())

    async def _rebuild(self) -> dict[str, Any]:
        names = list(self._sources)
        fetched = await asyncio.gather(*(self._fetch(n, self._sources[n]) for n in names))
        stale: list[str] = []
        missing: list[str] = []
        for name, doc in zip(names, fetched, strict=True):
            if doc is not None:
                self._last_good[name] = doc
            elif name in self._last_good:
                stale.append(name)
            else:
                missing.append(name)
        merged = merge_openapi(
            {name: self._last_good[name] for name in names if name in self._last_good},
            title=self.title,
            version=self.version,
            exclude_prefixes=self._exclude,
        )
        if missing:
            merged["x-bazaar-missing"] = missing
        if stale:
            merged["x-bazaar-stale"] = stale
        self._cached = merged
        self._expires_at = self._clock() + (self._retry_ttl if missing or stale else self._ttl)
        return merged

    async def _fetch(self, name: str, url: str) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(self._timeout):
                body = await self._get(url)
            doc = json.loads(body)
            _check_document(doc)
        except Exception as exc:  # any failure of one service leaves the others' docs served
            _log.warning(
                "openapi document of %s unavailable: %s",
                name,
                _describe(exc),
                extra={"service": name, "url": url},
            )
            return None
        assert isinstance(doc, dict)
        return doc

    def bind(self, session: aiohttp.ClientSession) -> None:
        """Use this session for fetching (for apps whose session is made at start-up)."""
        self._session = session

    async def _get(self, url: str) -> bytes:
        if self._session is None:
            raise _FetchError("no session bound")
        async with self._session.get(url, headers={"Accept": "application/json"}) as resp:
            if resp.status != 200:
                raise _FetchError(f"HTTP {resp.status}")
            body = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > self._max_bytes:
                    raise _FetchError(f"document larger than {self._max_bytes} bytes")
            return bytes(body)


def _check_document(doc: Any) -> None:
    if not isinstance(doc, dict):
        raise _FetchError("not a JSON object")
    openapi = doc.get("openapi")
    if not isinstance(openapi, str) or not openapi.startswith("3."):
        raise _FetchError(f"not an OpenAPI 3 document (openapi={openapi!r})")
    if not isinstance(doc.get("paths", {}), dict):
        raise _FetchError("'paths' is not an object")
    if not isinstance(doc.get("components", {}), dict):
        raise _FetchError("'components' is not an object")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
