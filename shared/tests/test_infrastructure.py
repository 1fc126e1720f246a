"""Which infrastructure a test run uses: the env var, else the local default, else a container."""

from __future__ import annotations

import asyncio
import gc
import http.server
import socket
import socketserver
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import aio_pika
import asyncpg
import pytest
import redis.asyncio
from docker.errors import DockerException

from bazaar.shared.testing import infrastructure
from bazaar.shared.testing.amqp import RABBITMQ_IMAGE, _start_rabbitmq_container
from bazaar.shared.testing.infrastructure import docker_engine_available, is_reachable, resolve
from bazaar.shared.testing.postgres import POSTGRES_IMAGE, _start_postgres_container
from bazaar.shared.testing.processes import join
from bazaar.shared.testing.redis import REDIS_IMAGE, _start_redis_container

Starter = Callable[[], tuple[str, AbstractContextManager[object]]]
STARTERS = {
    "postgres": (_start_postgres_container, POSTGRES_IMAGE),
    "rabbitmq": (_start_rabbitmq_container, RABBITMQ_IMAGE),
    "redis": (_start_redis_container, REDIS_IMAGE),
}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _no_container() -> tuple[str, nullcontext[object]]:
    raise AssertionError("no container may be started here")


def test_the_environment_variable_wins_over_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAZAAR_TEST_X_URL", "postgresql://elsewhere:1/x")
    got = resolve(
        env_var="BAZAAR_TEST_X_URL",
        local_default="postgresql://127.0.0.1:5432/postgres",
        start_container=_no_container,
        what="X",
    )
    assert (got.url, got.origin) == ("postgresql://elsewhere:1/x", "$BAZAAR_TEST_X_URL")


def test_the_local_default_is_used_when_it_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BAZAAR_TEST_X_URL", raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"postgresql://127.0.0.1:{server.getsockname()[1]}/postgres"
        got = resolve(
            env_var="BAZAAR_TEST_X_URL",
            local_default=url,
            start_container=_no_container,
            what="X",
        )
    assert (got.url, got.origin) == (url, "local default")


def test_a_container_is_started_only_when_nothing_answers_and_docker_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BAZAAR_TEST_X_URL", raising=False)
    monkeypatch.setattr(infrastructure, "docker_engine_available", lambda: True)
    stopped: list[bool] = []

    class FakeContainer:
        def __exit__(self, *exc: object) -> None:
            stopped.append(True)

    got = resolve(
        env_var="BAZAAR_TEST_X_URL",
        local_default=f"postgresql://127.0.0.1:{_closed_port()}/postgres",
        start_container=lambda: ("postgresql://container:5432/test", FakeContainer()),  # type: ignore[return-value,arg-type]
        what="X",
    )
    assert (got.url, got.origin) == ("postgresql://container:5432/test", "testcontainers")
    got.stop()
    assert stopped == [True]


def test_no_infrastructure_at_all_fails_loudly_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BAZAAR_TEST_X_URL", raising=False)
    monkeypatch.setattr(infrastructure, "docker_engine_available", lambda: False)
    with pytest.raises(RuntimeError, match="set BAZAAR_TEST_X_URL"):
        resolve(
            env_var="BAZAAR_TEST_X_URL",
            local_default=f"postgresql://127.0.0.1:{_closed_port()}/postgres",
            start_container=_no_container,
            what="X",
        )


def test_a_url_without_a_port_is_not_reachable() -> None:
    assert is_reachable("postgresql://127.0.0.1/postgres") is False


class _EnginePing(http.server.BaseHTTPRequestHandler):
    """The two calls a Docker client makes before anything else: /version, then /_ping."""

    def do_GET(self) -> None:
        body = b'{"ApiVersion": "1.41", "Version": "5.4.2"}' if "version" in self.path else b"OK"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        request, _ = super().get_request()
        return request, ("local", 0)  # BaseHTTPRequestHandler wants a (host, port)


@pytest.fixture
def engine_socket(tmp_path: Path) -> Iterator[str]:
    """A Unix socket that answers the Docker API's version and ping calls, as Podman's does."""
    path = tmp_path / "engine.sock"
    server = _UnixHTTPServer(str(path), _EnginePing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"unix://{path}"
    finally:
        server.shutdown()
        server.server_close()
        join(thread, 30, "the engine socket's server to stop")


def test_an_engine_socket_that_answers_counts_as_docker(
    monkeypatch: pytest.MonkeyPatch, engine_socket: str
) -> None:
    monkeypatch.setenv("DOCKER_HOST", engine_socket)
    assert docker_engine_available() is True


def test_a_socket_nobody_serves_does_not_count_whatever_the_docker_command_says(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # This machine has a `docker` command and no engine: the client alone must not count.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'nobody.sock'}")
    assert docker_engine_available() is False
    with socket.socket(socket.AF_UNIX) as bound:  # a socket file with no listener
        bound.bind(str(tmp_path / "refused.sock"))
        monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'refused.sock'}")
        assert docker_engine_available() is False


@pytest.mark.parametrize("name", sorted(STARTERS))
def test_each_container_fallback_imports_cleanly_and_goes_as_far_as_the_engine(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Under filterwarnings=error a deprecated module (testcontainers.postgres) fails the run at
    # its import, as does a missing client library (pika for RabbitMQ): with neither, the
    # starter's first failure is the engine that is not there.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'nobody.sock'}")
    start, _ = STARTERS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # docker-py's refused socket
        with pytest.raises(DockerException):
            start()
        gc.collect()


def _image_at_hand(image: str) -> bool:
    """Whether the engine has `image` or can pull it (registries may be out of reach)."""
    from testcontainers.core.docker_client import DockerClient

    client = DockerClient().client
    try:
        try:
            client.images.get(image)
        except DockerException:
            client.images.pull(image)
    except DockerException:
        return False
    finally:
        client.close()
    return True


async def _answers(name: str, url: str) -> None:
    if name == "postgres":
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
    elif name == "rabbitmq":
        async with await aio_pika.connect(url) as connection:
            await connection.channel()
    else:
        client = redis.asyncio.Redis.from_url(url)
        try:
            assert await client.ping()
        finally:
            await client.aclose()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STARTERS))
async def test_with_nothing_local_a_run_really_starts_its_container_and_talks_to_it(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not await asyncio.to_thread(docker_engine_available):
        pytest.skip("no Docker-compatible engine answers ($DOCKER_HOST, Docker's socket)")
    from testcontainers.core.config import testcontainers_config

    start, image = STARTERS[name]
    images = (
        [image]
        if testcontainers_config.ryuk_disabled
        else [image, testcontainers_config.ryuk_image]
    )
    missing = [i for i in images if not await asyncio.to_thread(_image_at_hand, i)]
    if missing:
        pytest.skip(f"the engine has no {', '.join(missing)} and cannot pull it")
    monkeypatch.delenv("BAZAAR_TEST_X_URL", raising=False)
    got = await asyncio.to_thread(
        resolve,
        env_var="BAZAAR_TEST_X_URL",
        local_default=f"tcp://127.0.0.1:{_closed_port()}/",
        start_container=start,
        what=name,
    )
    try:
        assert got.origin == "testcontainers"
        await _answers(name, got.url)
    finally:
        await asyncio.to_thread(got.stop)
