"""Response-cache fixtures: a fake catalog whose answers a test sets, gateways with or
without Redis and a broker, a TCP proxy whose connections a test can cut, a silent Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from bazaar.shared.testing.infrastructure import Resolved
from bazaar.shared.testing.server import free_port

Client = TestClient[web.Request, web.Application]
SHARED = "public, max-age=0, s-maxage=30"


@dataclass
class FakeCatalog:
    """Answers product reads as catalog does (ETag, Cache-Control; HEAD refused, 405), as a
    test sets them."""

    version: int = 1
    cache_control: str | None = SHARED
    status: int = 200
    delay: float = 0.0
    padding: int = 0
    content_type: str = "application/json"
    extra_headers: dict[str, str] = field(default_factory=dict)
    url: str = ""
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    #: Set once a request has reached it.
    reached: asyncio.Event = field(default_factory=asyncio.Event)

    def reads(self, path_qs: str | None = None) -> int:
        """How many reads (of this path and query) reached the catalog."""
        return sum(
            1 for m, p, _ in self.seen if m in ("GET", "HEAD") and (path_qs is None or p == path_qs)
        )

    async def __call__(self, request: web.Request, _body: bytes) -> web.StreamResponse:
        self.seen.append((request.method, request.rel_url.raw_path_qs, dict(request.headers)))
        self.reached.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        if request.method == "HEAD":  # catalog (FastAPI) routes GET only
            problem = {"type": "about:blank", "title": "Method Not Allowed", "status": 405}
            return web.json_response(
                problem,
                status=405,
                content_type="application/problem+json",
                headers={"Allow": "GET"},
            )
        if request.method != "GET":
            return web.json_response({"written": request.rel_url.raw_path}, status=200)
        etag = f'"v{self.version}"'
        headers = {"ETag": etag, **self.extra_headers}
        if self.cache_control is not None:
            headers["Cache-Control"] = self.cache_control
        if self.status == 200 and request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        payload = {
            "path": request.rel_url.raw_path_qs,
            "version": self.version,
            "padding": "x" * self.padding,
        }
        return web.Response(
            status=self.status,
            body=json.dumps(payload).encode(),
            content_type=self.content_type,
            headers=headers,
        )


@pytest_asyncio.fixture(loop_scope="session")
async def catalog(fakes) -> FakeCatalog:  # type: ignore[no-untyped-def]
    """A fake catalog on a socket (the gateway tests' FakeUpstream), answering as set."""
    behaviour = FakeCatalog()
    upstream = await fakes.upstream("catalog", behaviour)
    behaviour.url = upstream.url
    return behaviour


@pytest.fixture
def cache_prefix(redis_prefix: str) -> str:
    """A Redis prefix of this test's own under the run's (deleted when the run ends)."""
    return f"{redis_prefix}cache-{uuid.uuid4().hex[:8]}:"


@pytest.fixture(params=["in-process", "redis"])
def store_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Gateway settings for each store: in-process, and Redis (the test's prefix)."""
    if request.param == "in-process":
        return {}
    settings: dict[str, Any] = request.getfixturevalue("redis_settings")
    return settings


@pytest.fixture
def redis_settings(redis_server: Resolved, cache_prefix: str) -> dict[str, Any]:
    """Gateway settings sharing the test Redis, rate-limit counters and cache under this
    test's prefix."""
    return {
        "redis_url": redis_server.url,
        "redis_prefix": f"{cache_prefix}rl:",
        "cache_redis_prefix": cache_prefix,
    }


PRODUCT = "/v1/products/0f5ee755-e405-459d-8bef-d25b9c13ddad"
OTHER = "/v1/products/22b1cccc-5a78-4a4e-af2a-6a6a667712c9"


def cache_status(response: ClientResponse) -> str:
    """The answer's one Cache-Status."""
    values = response.headers.getall("Cache-Status", [])
    assert len(values) == 1, values
    return values[0]


async def read(client: Client, path: str, **kwargs: Any) -> tuple[ClientResponse, bytes]:
    """GET a path; the answer and its body."""
    response = await client.get(path, **kwargs)
    return response, await response.read()


async def subscribed(client: Client, expect: Any, *, to: bool = True, within: float = 15.0) -> None:
    """Wait until the gateway's events subscription is (or is not) whole."""
    async with asyncio.timeout(within):
        while True:
            metrics = await expect.metrics(client)
            if metrics.value("gateway_cache_events_subscribed") == (1.0 if to else 0.0):
                return
            await asyncio.sleep(0.05)


class Cuttable:
    """A TCP proxy on 127.0.0.1 to `target`: `cut()` resets every connection through it
    and refuses new ones until `mend()`; `freeze()` holds every byte (nothing is closed or
    reset: a network gone silent) until `thaw()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server: asyncio.Server | None = None
        self.port = 0
        self.open = True
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.flowing = asyncio.Event()
        self.flowing.set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]
        for task in (
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ):
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        """Reset every connection through the proxy; refuse new ones."""
        self.open = False
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    def mend(self) -> None:
        """Accept connections again."""
        self.open = True

    def freeze(self) -> None:
        """Hold every byte sent either way from now on."""
        self.flowing.clear()

    def thaw(self) -> None:
        """Pass on what was held, and whatever comes next."""
        self.flowing.set()

    async def stop(self) -> None:
        self.cut()
        self.thaw()
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


@pytest_asyncio.fixture(loop_scope="session")
async def cuttable() -> AsyncIterator[Callable[[str], Awaitable[tuple[Cuttable, str]]]]:
    """Start a cuttable proxy to a URL's host and port; returns it and the URL through it."""
    proxies: list[Cuttable] = []

    async def start(url: str) -> tuple[Cuttable, str]:
        parts = urlsplit(url)
        proxy = Cuttable((parts.hostname or "127.0.0.1", parts.port or 5672))
        await proxy.start()
        proxies.append(proxy)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{proxy.port}"
        through = parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host)
        return proxy, through.geturl()

    try:
        yield start
    finally:
        for proxy in proxies:
            await proxy.stop()


@pytest.fixture
def closed_redis_url() -> str:
    """The URL of a port on 127.0.0.1 nothing listens on."""
    return f"redis://127.0.0.1:{free_port()}/0"


class Silent:
    """A 'Redis' on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def _accept(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


@pytest_asyncio.fixture(loop_scope="session")
async def silent_redis() -> AsyncIterator[str]:
    """The URL of a 'Redis' that never answers."""
    silent = Silent()
    yield await silent.start()
    await silent.stop()
