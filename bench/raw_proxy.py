"""The floor of a gateway on raw asyncio protocols: the least such a reverse proxy can do.

A bench floor, not product code: it shows what a data path on uvloop protocols with a C
HTTP parser (llhttp through httptools) costs per request before any gateway decision, the
counterpart of bench/minimal_proxy.py for aiohttp. `python bench/raw_proxy.py PORT
UPSTREAM_URL`.

Each request on a keep-alive HTTP/1.1 connection is read whole, its end-to-end headers
kept (hop-by-hop ones, Host and the framing dropped), and sent to the one upstream over a
pool of keep-alive connections; the answer streams back as it is parsed, once per read:
status, end-to-end headers, the body with its Content-Length, or chunked again when the
upstream chunked it or ends it by closing. Upstream failures before any byte of the answer
went out are a 502; after, the client connection is closed. Not handled (a floor needs
none): pipelining (the connection is closed), HTTP/1.0 clients, upgrades, trailers,
timeouts, retries, headers named in Connection.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from http import HTTPStatus
from urllib.parse import urlsplit

import httptools
import uvloop

#: Not forwarded in either direction: hop-by-hop (RFC 9110 7.6.1) or re-framed here.
HOP = frozenset(
    b"connection keep-alive proxy-connection proxy-authenticate proxy-authorization te "
    b"trailer transfer-encoding upgrade expect".split()
)
STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
IDLE_SECONDS = 15.0  # an idle upstream connection older than this is not reused (its close race)


class Client(asyncio.Protocol):
    """One downstream connection: parses requests, hands each whole one to the pool."""

    transport: asyncio.Transport

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[bytes] = []
        self.body: list[bytes] = []
        self.busy = False  # an exchange is in flight
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(BAD_REQUEST)
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower not in HOP and lower != b"host" and lower != b"content-length":
            self.headers.append(b"%s: %s\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.busy:  # pipelined: not supported by the floor
            self.transport.close()
            return
        self.busy = True
        method, body = self.parser.get_method(), b"".join(self.body)
        length = b"content-length: %d\r\n" % len(body) if body else b""
        request = b"%s %s HTTP/1.1\r\n%s%s%s\r\n%s" % (
            method, self.url, self.pool.host, b"".join(self.headers), length, body,
        )  # fmt: skip
        self.pool.forward(self, request, head_only=method == b"HEAD")

    def respond(self, data: bytes, done: bool) -> None:
        """Write a part of the answer; after its last one, the connection takes the next."""
        if not self.transport.is_closing():
            self.transport.write(data)
            if done and not self.keep_alive:
                self.transport.close()
        self.busy = not done

    def fail(self, answered: bool) -> None:
        """The upstream failed: a 502 if nothing of the answer went out, else close."""
        self.busy = False
        if answered or self.transport.is_closing():
            self.transport.close()
        else:
            self.respond(BAD_GATEWAY, done=True)


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the upstream, carrying one exchange at a time."""

    transport: asyncio.Transport

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.client: Client | None = None
        self.out: list[bytes] = []  # the answer's bytes parsed from the current read
        self.headers: list[bytes] = []
        self.head_only = self.length = self.te = self.chunked = False
        self.started = self.done = self.keep_alive = self.answered = False
        self.status, self.idle_since = 0, 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def start(self, client: Client, request: bytes, head_only: bool) -> None:
        """Send one request; the answer goes to `client`."""
        self.client, self.head_only = client, head_only
        self.started = self.done = self.answered = False
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:  # nothing asked: the connection is out of step
            self.transport.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()  # connection_lost answers the client
            return
        if self.out:
            client.respond(b"".join(self.out), self.done)
            self.out.clear()
            self.answered = True
        if self.done:
            self.client = None
            if self.keep_alive:
                self.pool.release(self)
            else:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.headers.clear()
        self.length = self.te = False

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower not in HOP:
            self.headers.append(b"%s: %s\r\n" % (name, value))
            self.length = self.length or lower == b"content-length"
        elif lower == b"transfer-encoding":
            self.te = True

    def on_headers_complete(self) -> None:
        self.status = status = self.parser.get_status_code()
        if status < 200:  # interim (1xx): not forwarded, the final answer follows
            return
        self.keep_alive, self.started = self.parser.should_keep_alive(), True
        bodiless = self.head_only or status in (204, 304)
        self.chunked = not bodiless and (self.te or not self.length)
        status_line = STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status
        framing = b"transfer-encoding: chunked\r\n\r\n" if self.chunked else b"\r\n"
        self.out += (status_line, *self.headers, framing)
        if self.head_only:  # llhttp would wait for the announced body: a fresh parser
            self.done, self.parser = True, httptools.HttpResponseParser(self)

    def on_body(self, body: bytes) -> None:
        self.out.append(b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else body)

    def on_message_complete(self) -> None:
        if self.status >= 200:
            self.done = True
            if self.chunked:
                self.out.append(b"0\r\n\r\n")

    def connection_lost(self, _exc: Exception | None) -> None:
        self.pool.discard(self)
        client, self.client = self.client, None
        if client is None:
            return
        if self.started and self.chunked and not self.te:  # the close ends the body
            client.respond(b"0\r\n\r\n", done=True)
        else:
            client.fail(self.answered)


class Pool:
    """Idle keep-alive connections to the one upstream, newest first; more opened on need."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self.host = b"host: %s:%d\r\n" % (host.encode(), port)
        self.idle: list[Upstream] = []
        self.loop = asyncio.get_running_loop()
        self.connecting: set[asyncio.Task[None]] = set()

    def forward(self, client: Client, request: bytes, head_only: bool) -> None:
        """Send the request on an idle connection, else on a new one."""
        now = self.loop.time()
        while self.idle:
            upstream = self.idle.pop()
            if not upstream.transport.is_closing() and now - upstream.idle_since < IDLE_SECONDS:
                upstream.start(client, request, head_only)
                return
            upstream.transport.close()
        task = self.loop.create_task(self.connect(client, request, head_only))
        self.connecting.add(task)
        task.add_done_callback(self.connecting.discard)

    async def connect(self, client: Client, request: bytes, head_only: bool) -> None:
        try:
            _, upstream = await self.loop.create_connection(lambda: Upstream(self), *self.address)
        except OSError:
            client.fail(answered=False)
            return
        upstream.start(client, request, head_only)

    def release(self, upstream: Upstream) -> None:
        upstream.idle_since = self.loop.time()
        self.idle.append(upstream)

    def discard(self, upstream: Upstream) -> None:
        if upstream in self.idle:
            self.idle.remove(upstream)


async def serve(port: int, upstream_url: str) -> None:
    """Serve on 127.0.0.1:PORT until SIGTERM or SIGINT."""
    url = urlsplit(upstream_url)
    pool = Pool(url.hostname or "127.0.0.1", url.port or 80)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(pool), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    """`python bench/raw_proxy.py PORT UPSTREAM_URL`."""
    uvloop.run(serve(int(sys.argv[1]), sys.argv[2]))


if __name__ == "__main__":
    main()
