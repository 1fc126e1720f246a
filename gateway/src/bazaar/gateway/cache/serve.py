"""The response cache around the forwarding of product requests (API.md "Caching at the edge").

Reads (`GET`/`HEAD` of `/v1/products` and `/v1/products/<id>`) are answered from the store
when it holds a fresh entry the trust rules allow (`trust`), else fetched once per key and
replica (`flight`) and stored when the answer allows it (`entry`); writes through the
gateway to a product path drop that product's entries and every list before their answer
goes out. Every read says what happened in `Cache-Status` (RFC 9211).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from bazaar.gateway.cache.directive import asks_fresh_fetch
from bazaar.gateway.cache.entry import Entry, entry_of, shared_for
from bazaar.gateway.cache.flight import Flights, Outcome
from bazaar.gateway.cache.key import Target, is_product_path, target_of, written_groups
from bazaar.gateway.cache.metrics import CacheMetrics
from bazaar.gateway.cache.store import Found, Store, StoreUnavailable, Ticket
from bazaar.gateway.cache.trust import Trust
from bazaar.gateway.errors import GatewayError, UpstreamTimeout
from bazaar.gateway.relay import ANSWER_HEAD
from bazaar.shared.etag import if_none_match_matches

log = logging.getLogger("bazaar.gateway")

#: The cache's name in Cache-Status (API.md).
NAME = "bazaar-gateway"
HIT = NAME + "; hit; ttl=%d"
MISS = NAME + "; fwd=miss"
STORED = MISS + "; stored"
COLLAPSED = MISS + "; collapsed"
REQUEST = NAME + "; fwd=request"
BYPASS = NAME + "; fwd=bypass"
#: Not sent with the one fetch a flight makes for everyone: its answer must be the whole
#: representation, whatever each client's conditions or ranges. (An answer the upstream
#: encoded for the leader's Accept-Encoding is passed on, not stored or shared.)
_PERSONAL = ("If-None-Match", "If-Modified-Since", "If-Range", "Range")

Forward = Callable[..., Awaitable[web.StreamResponse]]


class ResponseCache:
    """The shared cache of public product reads, in front of catalog."""

    def __init__(
        self,
        store: Store,
        *,
        trust: Trust,
        metrics: CacheMetrics,
        max_entry_bytes: int,
        max_lifetime: int,
    ) -> None:
        self.store = store
        self.trust = trust
        self.metrics = metrics
        self._max_entry_bytes = max_entry_bytes
        self._max_lifetime = max_lifetime
        self._flights = Flights()
        self._count = metrics.requests.inc

    def around(self, forward: Forward, request: web.Request) -> Forward:
        """`forward` as the cache has it for this request (itself when not its business)."""
        path = request.path  # decoded: the path routed, and the one catalog reads
        if not is_product_path(path) or request.method == "OPTIONS":
            return forward
        if request.method in ("GET", "HEAD"):

            async def read(
                req: web.Request,
                *,
                headers: CIMultiDict[str],
                extra_response_headers: dict[str, str],
                **rest: Any,
            ) -> web.StreamResponse:
                return await self._read(forward, req, headers, extra_response_headers, rest)

            return read

        async def write(req: web.Request, **kwargs: Any) -> web.StreamResponse:
            try:
                return await forward(req, **kwargs)
            finally:  # a timeout may hide a change made all the same
                await self.invalidate(written_groups(path), source="write")

        return write

    async def invalidate(self, groups: Sequence[str] | None, *, source: str) -> None:
        """Drop the groups' entries (None: every entry); never raises."""
        self._flights.detach(groups)
        self.metrics.invalidations.labels(source).inc()
        try:
            await self.store.drop(groups)
        except StoreUnavailable:
            self.trust.doubt()  # what was fetched before may now be stale: at most 1 s more

    async def _read(
        self,
        forward: Forward,
        request: web.Request,
        headers: CIMultiDict[str],
        own: dict[str, str],
        rest: dict[str, Any],
    ) -> web.StreamResponse:
        target = target_of(request.rel_url.raw_path, request.rel_url.raw_query_string)
        if target is None or asks_fresh_fetch(request.headers.getall("Cache-Control", ())):
            own["Cache-Status"] = BYPASS if target is None else REQUEST
            self._count(("bypass",))
            return await _ask(forward, request, headers, own, rest)
        ticket: Ticket | None
        found: Found | None
        try:
            ticket, found = await self.store.lookup(target)
        except StoreUnavailable:
            ticket, found = None, None
        if found is not None and self.trust.allows(found):
            own["Cache-Status"] = HIT % max(0, math.floor(found.ttl))
            self._count(("hit",))
            return found.entry.answer(request, own, age=found.age)
        own["Cache-Status"] = MISS
        result = "miss" if ticket is not None else "error"
        era = None if ticket is None else ticket.era
        waiting = self._flights.join(target, era)  # a HEAD too: it is fetched as a GET
        if waiting is not None:
            try:  # the fetch ends by its route's timeout: this is only a bound
                async with asyncio.timeout(rest.get("seconds")):
                    outcome = await asyncio.shield(waiting)
            except TimeoutError:
                self._count((result,))
                raise UpstreamTimeout("The catalog service did not answer in time.") from None
            if outcome.entry is not None or outcome.failure is not None:
                own["Cache-Status"] = COLLAPSED
                self._count(("collapsed",))
                outcome.raise_failure()  # the same failure (a 502, 503, 504) as the fetch's
                assert outcome.entry is not None
                age = asyncio.get_running_loop().time() - outcome.started
                return outcome.entry.answer(request, own, age=age)
            # The answer could not be shared (not a storable 200): ask on its own.
        self._count((result,))
        if waiting is not None:
            return await _ask(forward, request, headers, own, rest)
        return await self._fetch(forward, request, target, ticket, headers, own, rest)

    async def _fetch(
        self,
        forward: Forward,
        request: web.Request,
        target: Target,
        ticket: Ticket | None,
        headers: CIMultiDict[str],
        own: dict[str, str],
        rest: dict[str, Any],
    ) -> web.StreamResponse:
        """Lead the flight: fetch the plain answer (with GET, for a HEAD too), share it, store
        it, answer from it."""
        era = None if ticket is None else ticket.era
        future = self._flights.lead(target, era)
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = Outcome(started)  # nothing to share unless set below
        lifetime: int | None = None

        def judge(upstream: aiohttp.ClientResponse, whole: bool) -> None:
            nonlocal lifetime
            lifetime = shared_for(
                upstream.status,
                upstream.headers,  # the upstream's own, before the gateway adds its
                upstream.content_length,
                whole=whole,
                authorized="Authorization" in headers,
                max_bytes=self._max_entry_bytes,
                max_lifetime=self._max_lifetime,
            )
            if lifetime is None:  # nothing to share: the waiters ask now, not after the body
                self._flights.land(target, era, future, outcome)

        try:
            plain = headers.copy()
            for name in _PERSONAL:
                plain.popall(name, None)
            response = await _ask(forward, request, plain, own, rest, judge)
            entry = None
            if lifetime is not None:
                entry = entry_of(response, own, lifetime, max_bytes=self._max_entry_bytes)
            if entry is None:
                return _conditional(response, request)
            outcome = Outcome(started, entry)
            self._flights.land(target, era, future, outcome)
            if ticket is not None and await self._store(target, ticket, entry, started):
                own["Cache-Status"] = STORED
            return entry.answer(request, own, age=None)
        except GatewayError as failure:
            outcome = Outcome(started, failure=failure, failure_headers=dict(failure.headers))
            raise
        finally:
            self._flights.land(target, era, future, outcome)

    async def _store(self, target: Target, ticket: Ticket, entry: Entry, started: float) -> bool:
        age = asyncio.get_running_loop().time() - started
        try:
            stored = await self.store.store(target, ticket, entry, age)
        except StoreUnavailable:
            return False
        if stored:
            self.metrics.stored_bytes.inc(entry.size)
        return stored


async def _ask(
    forward: Forward,
    request: web.Request,
    headers: CIMultiDict[str],
    own: dict[str, str],
    rest: dict[str, Any],
    judge: Callable[[aiohttp.ClientResponse, bool], None] | None = None,
) -> web.StreamResponse:
    """Forward a read, `judge` shown the upstream's answer head. A HEAD is sent as a GET
    (catalog answers HEAD 405; a HEAD asks for the GET's head) and only the answer's head
    is relayed when its body would be streamed; one read whole is dropped by aiohttp."""
    head = request.method == "HEAD"
    if not head and judge is None:
        return await forward(request, headers=headers, extra_response_headers=own, **rest)

    def watch(upstream: aiohttp.ClientResponse, whole: bool) -> bool:
        if judge is not None:
            judge(upstream, whole)
        return head and not whole

    watching = ANSWER_HEAD.set(watch)
    try:
        sent = request.clone(method="GET") if head else request
        return await forward(sent, headers=headers, extra_response_headers=own, **rest)
    finally:
        ANSWER_HEAD.reset(watching)


def _conditional(response: web.StreamResponse, request: web.Request) -> web.StreamResponse:
    """A 304 instead of an unstored 200 whose ETag the client's If-None-Match names (its
    condition was not sent upstream)."""
    etag = response.headers.get("ETag")
    if (
        response.status != 200
        or response.prepared
        or etag is None
        or not if_none_match_matches(request.headers.get("If-None-Match"), etag)
    ):
        return response
    headers = CIMultiDict(
        (k, v) for k, v in response.headers.items() if not k.lower().startswith("content-")
    )
    return web.Response(status=304, headers=headers)
