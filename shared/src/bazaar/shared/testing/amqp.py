"""Per-run RabbitMQ vhosts, and broker outages on a private node that always runs again after.

Against the local broker a run gets its own vhost (`rabbitmqctl add_vhost`), deleted when it
ends, so no test ever publishes into the default vhost "/".
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from bazaar.shared.testing.infrastructure import Resolved, resolve
from bazaar.shared.testing.private import PrivateRabbit, can_run_private_node, private_workdir

LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/"


#: The image a run starts when no broker answers (testcontainers fallback).
RABBITMQ_IMAGE = "rabbitmq:3.13-alpine"


def _start_rabbitmq_container() -> tuple[str, AbstractContextManager[object]]:
    with warnings.catch_warnings():
        # testcontainers' own RabbitMQ module (4.15) still waits with its deprecated decorator:
        # a DeprecationWarning at import, which filterwarnings=error would turn into a failure.
        warnings.filterwarnings(
            "ignore", "The @wait_container_is_ready decorator is deprecated", DeprecationWarning
        )
        from testcontainers.community.rabbitmq import RabbitMqContainer  # needs pika

    container = RabbitMqContainer(RABBITMQ_IMAGE)
    container.__enter__()
    host, port = container.get_container_host_ip(), container.get_exposed_port(5672)
    return f"amqp://guest:guest@{host}:{port}/", container


def resolve_amqp() -> Resolved:
    """The RabbitMQ broker of this run (see `resolve`)."""
    return resolve(
        env_var="BAZAAR_TEST_AMQP_URL",
        local_default=LOCAL_AMQP,
        start_container=_start_rabbitmq_container,
        what="RabbitMQ",
    )


def with_vhost(url: str, vhost: str) -> str:
    """The same broker URL pointing at another vhost."""
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(vhost, safe="")))


def _rabbitmqctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=120, check=check
    )


def controls_local_node(server: Resolved) -> bool:
    """Whether this run may manage the broker itself (the local default and rabbitmqctl)."""
    return server.origin == "local default" and shutil.which("rabbitmqctl") is not None


@pytest.fixture(scope="session")
def amqp_server() -> Iterator[Resolved]:
    """The broker of this run: $BAZAAR_TEST_AMQP_URL, local, or a container."""
    resolved = resolve_amqp()
    yield resolved
    resolved.stop()


@pytest.fixture(scope="session")
def amqp_url(amqp_server: Resolved, test_run_id: str) -> Iterator[str]:
    """A broker URL for this run: a fresh vhost on the local node, deleted at the end."""
    if not controls_local_node(amqp_server):
        # An explicit URL names its own vhost; a container is this run's alone.
        yield amqp_server.url
        return
    vhost = f"bazaar-test-{test_run_id}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        user = urlsplit(amqp_server.url).username or "guest"
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield with_vhost(amqp_server.url, vhost)
    finally:
        _rabbitmqctl("delete_vhost", vhost, check=False)


class BrokerOutage:
    """A RabbitMQ node of the test's own that it can stop and start again.

    The node is private (`PrivateRabbit`: own name, port and directory), never the machine's:
    restarting a shared node broke the runs that used it meanwhile (a `rabbitmqctl add_vhost`
    that never returned, a declaration that never got its answer).
    """

    def __init__(self, node: PrivateRabbit) -> None:
        self.node = node
        self.url = node.url
        self.outages = 0

    async def stop(self) -> None:
        """Stop the node; returns once nothing listens on its port."""
        await asyncio.to_thread(self.node.halt)
        self.outages += 1

    async def start(self) -> None:
        """Start the node again (same port, same queues) and wait until it takes connections."""
        await asyncio.to_thread(self.node.start)

    @asynccontextmanager
    async def down(self) -> AsyncIterator[None]:
        """The broker is stopped inside the block and running again after it, whatever happens."""
        try:
            await self.stop()
            yield
        finally:
            await self.start()


@pytest.fixture
def broker_outage() -> Iterator[BrokerOutage]:
    """A private broker node the test may stop and start (skips where none can run)."""
    if not can_run_private_node():
        pytest.skip("broker outages need rabbitmq-server to start a private node")
    work = private_workdir("bazaar-rabbitmq-")
    node = PrivateRabbit(work, uuid.uuid4().hex[:8], "bazaar-outage")
    try:
        node.start()
        yield BrokerOutage(node)
    finally:
        node.stop()
        shutil.rmtree(work, ignore_errors=True)  # the node removed its own directory in it


class EventTap:
    """A private queue bound to `bazaar.events`: what an outside subscriber would receive."""

    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []
        self.messages: list[object] = []
        self._arrived = asyncio.Condition()

    async def _on_message(self, message: object) -> None:
        import json

        from aio_pika.abc import AbstractIncomingMessage

        assert isinstance(message, AbstractIncomingMessage)
        self.messages.append(message)
        self.events.append(json.loads(message.body))
        async with self._arrived:
            self._arrived.notify_all()

    async def wait_for(self, count: int, within: float = 10.0) -> list[dict[str, object]]:
        """Wait until `count` events arrived; return them all (fails the test on timeout)."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.events) >= count)
        return self.events


#: How long the broker may take to answer a tap's connection, declarations or close.
BROKER_SECONDS = 30


@asynccontextmanager
async def _answering(what: str) -> AsyncIterator[None]:
    """Fail with `what` if the block waits on the broker longer than `BROKER_SECONDS`."""
    try:
        async with asyncio.timeout(BROKER_SECONDS):
            yield
    except TimeoutError:
        raise TimeoutError(f"{what}: no answer from the broker within {BROKER_SECONDS} s") from None


@asynccontextmanager
async def tap_events(url: str, *routing_keys: str) -> AsyncIterator[EventTap]:
    """Receive the events of these routing keys (default all) while the block runs."""
    import aio_pika

    from bazaar.shared.messaging.topology import declare_exchange

    tap = EventTap()
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port}{parts.path}"  # no password in a message
    async with _answering(f"connecting an event tap to {where}"):
        connection = await aio_pika.connect(url)
    try:
        async with _answering(f"declaring an event tap's queue on {where}"):
            channel = await connection.channel()
            exchange = await declare_exchange(channel)
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            for key in routing_keys or ("#",):
                await queue.bind(exchange, routing_key=key)
            await queue.consume(tap._on_message, no_ack=True)
        yield tap
    finally:
        async with _answering(f"closing an event tap's connection to {where}"):
            await connection.close()


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, every: float = 0.05
) -> None:
    """Wait until `check()` is true (a consumer is asynchronous); TimeoutError after `within`."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(every)
