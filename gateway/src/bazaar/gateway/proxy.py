"""Forwarding to an upstream: pooled sessions, timeouts, breaker, bounded concurrency, retries.

The route's timeout runs until the upstream's answer head has arrived (and a small answer's
body, read whole); a streamed answer then runs on as long as the upstream keeps sending
(see `relay`), so a Server-Sent Events stream or a large download to a slow reader is not
cut at the route's timeout. An event stream (`text/event-stream`) gives its concurrency
slot back once its head is in and counts among its caller's open streams instead (see
`bazaar.gateway.admission.OpenStreams`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from bazaar.gateway.admission import EVENT_STREAM, StreamSlot
from bazaar.gateway.attempt import ATTEMPT, Attempt, ForwardRequest, never_reached
from bazaar.gateway.breaker import BreakerOpen, CircuitBreaker
from bazaar.gateway.config import SAFE_METHODS, UpstreamConfig
from bazaar.gateway.errors import (
    BadGateway,
    GatewayError,
    UpstreamFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from bazaar.gateway.metrics import GatewayMetrics
from bazaar.gateway.relay import (
    BrokenOff,
    is_problem,
    problem_trace_id,
    relay,
)

__all__ = ["SLOT_WAIT_SECONDS", "ForwardRequest", "Upstream"]

log = logging.getLogger("bazaar.gateway")

#: How long a request may wait for a free slot when the upstream is saturated.
SLOT_WAIT_SECONDS = 1.0
#: Answers that say the upstream itself is failing (counted against its breaker).
_FAILING_STATUS = frozenset({500, 502, 503, 504})


class Upstream:
    """One upstream: its pooled session, its breaker and its concurrency bound."""

    def __init__(self, name: str, config: UpstreamConfig, metrics: GatewayMetrics) -> None:
        self.name = name
        self.config = config
        self.base = config.url.rstrip("/")
        self.breaker = CircuitBreaker(
            window_seconds=config.breaker_window_seconds,
            min_calls=config.breaker_min_calls,
            failure_rate=config.breaker_failure_rate,
            reset_seconds=config.breaker_reset_seconds,
            max_reset_seconds=config.breaker_max_reset_seconds,
        )
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._metrics = metrics
        self._label = (name,)
        # The route's timeout is applied around the answer head (asyncio.timeout), not as
        # aiohttp's total, which would also cut a streamed answer's body.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout)
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the pooled session (one per upstream, keep-alive)."""
        connector = aiohttp.TCPConnector(
            # No bound here: `_slots` bounds the requests in flight, and event streams (no
            # slot once their head is in) are bounded per caller; a pool bound would have
            # open streams starve every other request of connections.
            limit=0,
            keepalive_timeout=self.config.pool_idle_seconds,
            ttl_dns_cache=300,
            enable_cleanup_closed=True,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # bytes pass through as the upstream encoded them
            request_class=ForwardRequest,
            # One session serves every client: an upstream's Set-Cookie must reach its
            # client, never be kept here and sent along with other clients' requests.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # aiohttp would also resend PUT/DELETE once on a dropped keep-alive connection;
        # the gateway decides what is safe to resend itself (see _send).
        self.session._retry_connection = False

    async def close(self) -> None:
        """Close the session."""
        if self.session is not None:
            await self.session.close()

    async def forward(
        self,
        request: web.Request,
        *,
        headers: CIMultiDict[str],
        body: bytes | bytearray | None,
        seconds: float,
        extra_response_headers: Mapping[str, str],
        resendable: bool = False,
        stream: StreamSlot | None = None,
    ) -> web.StreamResponse:
        """Send the request (its body already read whole) upstream and relay the answer.

        Safe methods are sent once more after a connection failure; a `resendable` request
        (an Idempotency-Key the route honours) only when it provably never reached the
        upstream; other requests never. An event stream answer takes the caller's `stream`
        slot (RateLimited if the caller holds its limit); any other gives it back.
        """
        try:
            call = self.breaker.before_call()
        except BreakerOpen as exc:
            raise UpstreamUnavailable(
                f"The {self.name} service is unavailable right now.",
                headers={"Retry-After": str(exc.retry_after)},
            ) from None
        try:  # however the call ends, a half-open trial ends with it
            await self._acquire_slot()
            slotted = True
            try:
                deadline = asyncio.get_running_loop().time() + seconds
                upstream = await self._send(call, request, headers, body, deadline, resendable)
                try:
                    await self._judge(call, upstream, deadline)
                    events = upstream.content_type == EVENT_STREAM
                    if events:  # it runs for minutes: no slot of the requests in flight
                        self._slots.release()
                        slotted = False
                    if stream is not None:
                        if events:
                            stream.take()
                        else:
                            stream.give_back()
                    return await self._answer(
                        request,
                        upstream,
                        extra_response_headers,
                        deadline,
                        stream if events else None,
                    )
                finally:
                    upstream.release()
            finally:
                if slotted:
                    self._slots.release()
        finally:
            self.breaker.end(call)

    async def _acquire_slot(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # free: no timer needed (the hot path)
            return
        try:  # saturated: wait a little for a slot, then shed
            async with asyncio.timeout(SLOT_WAIT_SECONDS):
                await self._slots.acquire()
        except TimeoutError:
            raise UpstreamUnavailable(
                f"The {self.name} service is saturated.", headers={"Retry-After": "1"}
            ) from None

    async def _send(
        self,
        call: int,
        request: web.Request,
        headers: CIMultiDict[str],
        body: bytes | bytearray | None,
        deadline: float,
        resendable: bool,
    ) -> aiohttp.ClientResponse:
        """The upstream's answer head, by `deadline` (504 after)."""
        try:
            async with asyncio.timeout_at(deadline):
                return await self._attempts(call, request, headers, body, resendable)
        except TimeoutError as exc:  # the route's deadline, or aiohttp's connect timeout
            self._failed(call, "timeout")
            raise UpstreamTimeout(f"The {self.name} service did not answer in time.") from exc

    async def _attempts(
        self,
        call: int,
        request: web.Request,
        headers: CIMultiDict[str],
        body: bytes | bytearray | None,
        resendable: bool,
    ) -> aiohttp.ClientResponse:
        assert self.session is not None
        url = self.base + request.rel_url.raw_path_qs
        safe = request.method in SAFE_METHODS
        tries = 2 if safe or resendable else 1
        while True:
            tries -= 1
            started = time.perf_counter()
            attempt = Attempt()  # tells a stale pooled connection from a fresh one
            token = ATTEMPT.set(attempt)
            try:
                upstream = await self.session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    timeout=self._timeout,
                )
            except TimeoutError:
                raise  # aiohttp's connect timeout (a ClientConnectionError too): a 504
            except aiohttp.ClientConnectionError as exc:  # refused, reset, closed
                if tries and (safe or never_reached(exc, attempt)):
                    self._metrics.upstream_errors.labels(self.name, "retried").inc()
                    continue
                self._failed(call, "connect")  # one request, one verdict, however many tries
                raise BadGateway(f"The {self.name} service refused the connection.") from exc
            except aiohttp.ClientError as exc:  # an answer aiohttp cannot parse
                self._failed(call, "malformed")
                raise BadGateway(f"The {self.name} service sent a malformed answer.") from exc
            finally:
                ATTEMPT.reset(token)
            self._metrics.upstream.observe(self._label, time.perf_counter() - started)
            return upstream

    async def _judge(self, call: int, upstream: aiohttp.ClientResponse, deadline: float) -> None:
        """Tell the breaker how the upstream did; raise the gateway's own answer to a failure."""
        status = upstream.status
        if status in _FAILING_STATUS:
            self._failed(call, str(status))
        else:
            self.breaker.on_success(call)
        if status >= 500 and (status == 500 or not is_problem(upstream)):
            # Whatever an upstream's failure page holds (a stack trace, internals) stays
            # here; the client gets the gateway's own problem, and never a 500: that would
            # blame the gateway.
            raise await self._failure(upstream, deadline)

    async def _answer(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        extra: Mapping[str, str],
        deadline: float,
        stream: StreamSlot | None,
    ) -> web.StreamResponse:
        try:
            return await relay(
                request,
                upstream,
                extra,
                self.name,
                deadline=deadline,
                idle_seconds=self.config.stream_idle_seconds,
                stream=stream,
            )
        except BrokenOff as broken:
            self._metrics.upstream_errors.labels(self.name, broken.kind).inc()
            log.warning("the %s service broke off its answer (%s)", self.name, broken.kind)
            return broken.response

    async def _failure(self, upstream: aiohttp.ClientResponse, deadline: float) -> GatewayError:
        detail = f"The {self.name} service failed ({upstream.status})."
        retry_after = upstream.headers.get("Retry-After")
        headers = {"Retry-After": retry_after} if retry_after else {}
        if upstream.status == 503:
            return UpstreamUnavailable(detail, headers=headers)
        if upstream.status == 504:
            return UpstreamTimeout(detail)
        trace_id = await problem_trace_id(upstream, deadline) if is_problem(upstream) else None
        return UpstreamFailed(detail, trace_id=trace_id, headers=headers)

    def _failed(self, call: int, kind: str) -> None:
        self.breaker.on_failure(call)
        self._metrics.upstream_errors.labels(self.name, kind).inc()
