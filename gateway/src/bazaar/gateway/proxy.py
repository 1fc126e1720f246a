"""Forwarding to an upstream: pooled sessions, streaming both ways, timeouts, breaker, retries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from bazaar.gateway.breaker import BreakerOpen, CircuitBreaker
from bazaar.gateway.config import SAFE_METHODS, UpstreamConfig
from bazaar.gateway.errors import BadGateway, GatewayError, UpstreamTimeout, UpstreamUnavailable
from bazaar.gateway.metrics import GatewayMetrics

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded (nor those that
# the Connection header names).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_SKIPPED_DEFAULTS: CIMultiDict[None] = CIMultiDict(
    (name, None) for name in ("Accept-Encoding", "Content-Type", "User-Agent")
)
_NOT_RELAYED = HOP_BY_HOP | {"content-length"}  # aiohttp sets the length it sends
#: Answers up to this size are read whole (faster); larger ones are streamed chunk by chunk.
BUFFER_LIMIT = 64 * 1024
CHUNK = 64 * 1024
#: How long a request may wait for a free slot when the upstream is saturated.
SLOT_WAIT_SECONDS = 1.0
_CONNECT_ERRORS = (
    aiohttp.ClientConnectorError,
    aiohttp.ClientOSError,
    aiohttp.ServerDisconnectedError,
)
_RETRYABLE_STATUS = frozenset({502, 503, 504})


def connection_named(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    """The (lower-case) header names the `Connection` header lists: hop-by-hop too."""
    if "Connection" not in headers:
        return frozenset()
    return frozenset(
        token.strip().lower()
        for value in headers.getall("Connection")
        for token in value.split(",")
    )


class ForwardRequest(aiohttp.ClientRequest):
    """A request sent on a client's behalf: aiohttp adds no User-Agent, Accept-Encoding or
    Content-Type of its own (the client's are forwarded as they are); `Accept: */*` is
    added when the client sent none, as aiohttp does.

    The session's `skip_auto_headers` would do the same, with a sort and two header copies
    on every request.
    """

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:  # noqa: ARG002
        """Skip aiohttp's defaults (see the class)."""
        self._skip_auto_headers = _SKIPPED_DEFAULTS
        if "Accept" not in self.headers:
            self.headers["Accept"] = "*/*"


class Upstream:
    """One upstream: its pooled session, its breaker and its concurrency bound."""

    def __init__(self, name: str, config: UpstreamConfig, metrics: GatewayMetrics) -> None:
        self.name = name
        self.config = config
        self.base = config.url.rstrip("/")
        self.breaker = CircuitBreaker(
            failures=config.breaker_failures, reset_seconds=config.breaker_reset_seconds
        )
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._metrics = metrics
        self._label = (name,)
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the pooled session (one per upstream, keep-alive)."""
        connector = aiohttp.TCPConnector(
            limit=self.config.max_concurrency, ttl_dns_cache=300, enable_cleanup_closed=True
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
        # the gateway retries safe methods only, itself (see _forward).
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
        body: bytes | None,
        seconds: float,
        extra_response_headers: Mapping[str, str],
    ) -> web.StreamResponse:
        """Send the request upstream and relay the answer (retrying safe methods once)."""
        try:
            self.breaker.before_call()
        except BreakerOpen as exc:
            raise UpstreamUnavailable(
                f"The {self.name} service is unavailable right now.",
                headers={"Retry-After": str(exc.retry_after)},
            ) from None
        if self._slots.locked():  # saturated: wait a little for a slot, then shed
            try:
                async with asyncio.timeout(SLOT_WAIT_SECONDS):
                    await self._slots.acquire()
            except TimeoutError:
                raise UpstreamUnavailable(
                    f"The {self.name} service is saturated.", headers={"Retry-After": "1"}
                ) from None
        else:
            await self._slots.acquire()  # free: no timer needed (the hot path)
        try:
            return await self._forward(request, headers, body, seconds, extra_response_headers)
        finally:
            self._slots.release()

    async def _forward(
        self,
        request: web.Request,
        headers: CIMultiDict[str],
        body: bytes | None,
        seconds: float,
        extra: Mapping[str, str],
    ) -> web.StreamResponse:
        assert self.session is not None
        url = self.base + request.rel_url.raw_path_qs
        attempts = 2 if request.method in SAFE_METHODS else 1
        client_timeout = self._timeout(seconds)
        for attempt in range(attempts):
            data: bytes | AsyncIterator[bytes] | None = (
                body if body is not None else _body_stream(request)
            )
            if body is None and not request.can_read_body:
                data = None  # no body: send none (not an empty chunked one)
            started = time.perf_counter()
            try:
                upstream = await self.session.request(
                    request.method,
                    url,
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    timeout=client_timeout,
                )
            except _CONNECT_ERRORS as exc:
                self._failed("connect")
                if attempt + 1 < attempts and body is None and not request.can_read_body:
                    continue
                raise BadGateway(f"The {self.name} service refused the connection.") from exc
            except TimeoutError as exc:
                self._failed("timeout")
                raise UpstreamTimeout(f"The {self.name} service did not answer in time.") from exc
            self._metrics.upstream.observe(self._label, time.perf_counter() - started)
            if upstream.status in _RETRYABLE_STATUS:
                self._failed(str(upstream.status))
            else:
                self.breaker.on_success()
            try:
                if upstream.status >= 500 and not _is_problem(upstream):
                    # Whatever an upstream's failure page holds (a stack trace, internals)
                    # stays here; the client gets the gateway's own problem, same status
                    # (but never 500: that would blame the gateway).
                    raise _upstream_failure(self.name, upstream)
                return await _relay(request, upstream, extra)
            except TimeoutError as exc:
                raise UpstreamTimeout(f"The {self.name} service stalled mid-answer.") from exc
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                self._failed("reset")
                raise BadGateway(f"The {self.name} service broke off its answer.") from exc
            finally:
                upstream.release()
        raise AssertionError("unreachable")  # pragma: no cover

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        """One ClientTimeout per route timeout, made once (not per request)."""
        cached = self._timeouts.get(seconds)
        if cached is None:
            cached = aiohttp.ClientTimeout(total=seconds, sock_connect=self.config.connect_timeout)
            self._timeouts[seconds] = cached
        return cached

    def _failed(self, kind: str) -> None:
        self.breaker.on_failure()
        self._metrics.upstream_errors.labels(self.name, kind).inc()


def _upstream_failure(name: str, upstream: aiohttp.ClientResponse) -> GatewayError:
    detail = f"The {name} service failed ({upstream.status})."
    retry_after = upstream.headers.get("Retry-After")
    headers = {"Retry-After": retry_after} if retry_after else {}
    if upstream.status == 503:
        return UpstreamUnavailable(detail, headers=headers)
    if upstream.status == 504:
        return UpstreamTimeout(detail)
    return BadGateway(detail, headers=headers)


def _is_problem(upstream: aiohttp.ClientResponse) -> bool:
    return upstream.content_type == "application/problem+json"


async def _body_stream(request: web.Request) -> AsyncIterator[bytes]:
    if not request.can_read_body:
        return
    async for chunk in request.content.iter_chunked(CHUNK):
        yield chunk


def _answer_headers(
    target: CIMultiDict[str], upstream: aiohttp.ClientResponse, extra: Mapping[str, str]
) -> None:
    """Copy the upstream's end-to-end headers (not its length) and the gateway's own."""
    source = upstream.headers
    named = connection_named(source)
    for name, value in source.items():
        lowered = name.lower()
        if lowered in _NOT_RELAYED or (named and lowered in named):
            continue
        target.add(name, value)
    target.update(extra)


async def _relay(
    request: web.Request, upstream: aiohttp.ClientResponse, extra: Mapping[str, str]
) -> web.StreamResponse:
    length = upstream.content_length
    if length is not None and length <= BUFFER_LIMIT:
        body = await upstream.read()
        answer = web.Response(status=upstream.status, reason=upstream.reason, body=body)
        _answer_headers(answer.headers, upstream, extra)
        return answer
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    _answer_headers(response.headers, upstream, extra)
    if length is not None:
        response.content_length = length
    await response.prepare(request)
    try:
        async for chunk in upstream.content.iter_chunked(CHUNK):
            await response.write(chunk)
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
        # The status line is gone: the only honest signal left is to cut the connection,
        # so the client sees an incomplete answer rather than a complete-looking one.
        raise ConnectionResetError("the upstream broke off its answer mid-stream") from exc
    await response.write_eof()
    return response
