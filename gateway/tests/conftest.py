"""Gateway test fixtures: the running gateway, and small fake upstreams on real sockets.

Every gateway a test starts listens on 127.0.0.1 and talks to its upstreams over real
sockets. Fake upstreams come in two kinds: an aiohttp app whose behaviour a test sets
(echo by default: it answers with what it received), and raw TCP servers for failures
aiohttp will not produce on purpose (a hang, a reset, a broken answer).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families

from bazaar.gateway.app import create_app
from bazaar.gateway.config import GatewaySettings, UpstreamConfig
from bazaar.gateway.edge import EdgeRunner
from bazaar.shared.testing.server import free_port
from bazaar.shared.testing.tokens import JwksServer, TokenIssuer

UPSTREAM_NAMES = ("auth", "catalog", "orders")


@dataclass(frozen=True)
class Seen:
    """One request as an upstream received it."""

    method: str
    path_qs: str
    headers: CIMultiDictProxy[str]
    body: bytes


Behaviour = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


def echo_body(name: str, request: web.Request, body: bytes) -> dict[str, Any]:
    """What the echo behaviour answers: everything the upstream received."""
    return {
        "upstream": name,
        "method": request.method,
        "path_qs": request.rel_url.raw_path_qs,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_length": len(body),
        "body": body.decode("latin-1") if len(body) <= 4096 else None,
    }


class FakeUpstream:
    """An aiohttp upstream with a swappable behaviour; it records every request but /readyz."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[Seen] = []
        self.ready_status = 200
        self.buffer_body = True
        self.behaviour: Behaviour = self.echo
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def hits(self) -> int:
        """How many requests reached this upstream."""
        return len(self.seen)

    async def echo(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Answer 200 with a JSON description of the request received."""
        return web.json_response(echo_body(self.name, request, body))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/readyz":
            return web.json_response({"status": "ready"}, status=self.ready_status)
        # With buffer_body off, the behaviour reads the body itself (to watch it stream in).
        body = await request.read() if self.buffer_body else b""
        self.seen.append(Seen(request.method, request.rel_url.raw_path_qs, request.headers, body))
        return await self.behaviour(request, body)

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Stop listening and end whatever is still in flight."""
        if self._runner is not None:
            await self._runner.cleanup()


RawResponder = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    """Read the body a request head announces (Content-Length or chunked)."""
    fields = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers from our clients
                return body
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    length = int(fields.get("content-length", "0") or 0)
    return await reader.readexactly(length) if length else b""


class RawUpstream:
    """A bare TCP server: reads a request head, counts it, then lets `respond` misbehave."""

    def __init__(self, respond: RawResponder) -> None:
        self._respond = respond
        self.hits = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.hits += 1
                self.heads.append(head)
                self.bodies.append(await _read_body(reader, head))
                await self._respond(reader, writer, self.hits)
                if writer.is_closing():
                    return
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Close the listener and every connection."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


def reset_connection(writer: asyncio.StreamWriter) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0), as a crashed process would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def never_answer(
    reader: asyncio.StreamReader, _writer: asyncio.StreamWriter, _hit: int
) -> None:
    """Hold the connection open and say nothing."""
    await asyncio.sleep(3600)


async def reset_after_head(
    _reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _hit: int
) -> None:
    """Reset the connection once the request head is in."""
    reset_connection(writer)


class Fakes:
    """Starts fake upstreams for one test and stops them all afterwards."""

    def __init__(self, stack: AsyncExitStack) -> None:
        self._stack = stack

    async def upstream(
        self, name: str = "fake", behaviour: Behaviour | None = None
    ) -> FakeUpstream:
        """An aiohttp upstream (echo unless `behaviour` is given)."""
        fake = FakeUpstream(name)
        if behaviour is not None:
            fake.behaviour = behaviour
        await fake.start()
        self._stack.push_async_callback(fake.stop)
        return fake

    async def raw(self, respond: RawResponder) -> RawUpstream:
        """A raw TCP upstream answering with `respond`."""
        fake = RawUpstream(respond)
        await fake.start()
        self._stack.push_async_callback(fake.stop)
        return fake

    async def hanging(self) -> RawUpstream:
        """An upstream that accepts connections and never answers."""
        return await self.raw(never_answer)

    async def resetting(self) -> RawUpstream:
        """An upstream that resets every connection once the request head arrived."""
        return await self.raw(reset_after_head)

    #: Close a raw connection with a TCP RST.
    reset = staticmethod(reset_connection)

    @staticmethod
    def closed_url() -> str:
        """A URL of 127.0.0.1 where nothing listens (connections are refused)."""
        return f"http://127.0.0.1:{free_port()}"


@pytest_asyncio.fixture(loop_scope="session")
async def fakes() -> AsyncIterator[Fakes]:
    """Fake upstreams of one test."""
    async with AsyncExitStack() as stack:
        yield Fakes(stack)


UpstreamSpec = str | FakeUpstream | RawUpstream | UpstreamConfig


def _upstream_config(spec: UpstreamSpec) -> UpstreamConfig:
    if isinstance(spec, UpstreamConfig):
        return spec
    url = spec if isinstance(spec, str) else spec.url
    return UpstreamConfig(url=url)


class GatewayTestServer(TestServer):
    """aiohttp's TestServer serving the gateway as `bazaar-gateway serve` does (EdgeRunner)."""

    async def _make_runner(self, **kwargs: Any) -> EdgeRunner:
        return EdgeRunner(self.app, **kwargs)


class Gateways:
    """Builds gateways for one test (TestServer on 127.0.0.1) and closes them afterwards."""

    def __init__(self, stack: AsyncExitStack, jwks: JwksServer, keys: str) -> None:
        self._stack = stack
        self._jwks = jwks
        #: The Redis keys of this test's gateways (replicas share them), under the run's
        #: prefix (`redis_prefix` deletes them when the run ends): never the deployed
        #: defaults, where runs and tests on one Redis would count and cache together.
        self._keys = f"{keys}gw-{uuid.uuid4().hex[:8]}:"

    def settings(
        self,
        upstreams: Mapping[str, UpstreamSpec] | None = None,
        *,
        settings_class: type[GatewaySettings] = GatewaySettings,
        **overrides: Any,
    ) -> GatewaySettings:
        """Gateway settings trusting the test issuer; unnamed upstreams refuse connections."""
        configs = {name: _upstream_config(Fakes.closed_url()) for name in UPSTREAM_NAMES}
        configs.update({name: _upstream_config(s) for name, s in (upstreams or {}).items()})
        values: dict[str, Any] = {
            "environment": "test",
            "upstreams": configs,
            "jwt_jwks_url": self._jwks.url,
            "jwt_issuer": TokenIssuer.ISSUER,
            "jwt_audience": TokenIssuer.AUDIENCE,
            **overrides,
        }
        if "redis_url" in overrides:
            values.setdefault("redis_prefix", f"{self._keys}ratelimit:")
            values.setdefault("cache_redis_prefix", f"{self._keys}cache:")
        return settings_class(_env_file=None, **values)  # type: ignore[call-arg]

    async def start(
        self,
        upstreams: Mapping[str, UpstreamSpec] | None = None,
        *,
        settings_class: type[GatewaySettings] = GatewaySettings,
        **overrides: Any,
    ) -> TestClient[web.Request, web.Application]:
        """Start a gateway with these upstreams and settings; return a client bound to it."""
        settings = self.settings(upstreams, settings_class=settings_class, **overrides)
        return await self.serve(create_app(settings))

    async def serve(self, app: web.Application) -> TestClient[web.Request, web.Application]:
        """Serve an already built gateway app on 127.0.0.1; return a client bound to it."""
        client = TestClient(GatewayTestServer(app, host="127.0.0.1"))
        await client.start_server()
        self._stack.push_async_callback(client.close)
        return client


@pytest_asyncio.fixture(loop_scope="session")
async def gateways(jwks_server: JwksServer, test_run_id: str) -> AsyncIterator[Gateways]:
    """Gateways of one test."""
    async with AsyncExitStack() as stack:
        yield Gateways(stack, jwks_server, f"bazaar-test:{test_run_id}:")


@dataclass
class Metrics:
    """A parsed /metrics page: sample values by name and labels."""

    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Metrics:
        """Parse Prometheus text exposition."""
        out = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out.samples.append((sample.name, dict(sample.labels), float(sample.value)))
        return out

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
        return sum(
            value
            for sample_name, sample_labels, value in self.samples
            if sample_name == name and labels.items() <= sample_labels.items()
        )

    def labels(self, name: str) -> list[dict[str, str]]:
        """The label sets of every sample of `name`."""
        return [labels for sample_name, labels, _ in self.samples if sample_name == name]

    def names(self) -> set[str]:
        """The name of every sample."""
        return {sample_name for sample_name, _, _ in self.samples}


class Expect:
    """Assertions and readers every gateway test shares."""

    @staticmethod
    async def problem(response: ClientResponse, status: int, slug: str) -> dict[str, Any]:
        """Assert an RFC 9457 answer of the gateway with this status and slug; return it."""
        text = await response.text()
        assert response.status == status, text
        assert response.content_type == "application/problem+json", response.content_type
        body: dict[str, Any] = json.loads(text)
        assert body["type"].endswith(f"/{slug}"), body
        assert body["status"] == status
        assert body["title"] and body["detail"]
        assert body["trace_id"] == response.headers["X-Trace-Id"], body
        assert response.headers.get("X-Request-ID")
        return body

    @staticmethod
    async def echo(response: ClientResponse) -> dict[str, Any]:
        """Assert a 200 from an echo upstream; return what it received."""
        text = await response.text()
        assert response.status == 200, text
        payload: dict[str, Any] = json.loads(text)
        return payload

    @staticmethod
    def headers(payload: Mapping[str, Any]) -> CIMultiDict[str]:
        """The headers an echo upstream received, case-insensitive."""
        return CIMultiDict((k, v) for k, v in payload["headers"])

    @staticmethod
    async def metrics(client: TestClient[web.Request, web.Application]) -> Metrics:
        """Read and parse the gateway's /metrics."""
        response = await client.get("/metrics")
        assert response.status == 200
        return Metrics.parse(await response.text())


@pytest.fixture
def expect() -> Expect:
    """Shared assertions and readers."""
    return Expect()
