"""Find the infrastructure a test run talks to: env var, else local default, else a container."""

from __future__ import annotations

import gc
import os
import socket
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Resolved:
    """The address a test run uses, and what to stop when the run ends."""

    url: str
    origin: str
    stops: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        """Stop whatever was started for this run (containers)."""
        for stop in reversed(self.stops):
            stop()


def is_reachable(url: str, timeout: float = 1.0) -> bool:
    """Answer whether something listens on the host and port of `url`."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    if port is None:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def docker_engine_available() -> bool:
    """Answer whether a Docker-compatible engine answers where testcontainers will look.

    That is testcontainers' own client: `$DOCKER_HOST` (a Docker engine, or Podman's
    `podman system service` socket), else ~/.testcontainers.properties, else Docker's default
    socket. A `docker` command without an engine behind it does not count. With Podman on
    this kind of machine testcontainers also wants TESTCONTAINERS_RYUK_DISABLED=true (its
    reaper needs Docker's socket) and TESTCONTAINERS_CONNECTION_MODE=docker_host (it takes
    the sandbox for a container and would look for a bridge network).
    """
    with warnings.catch_warnings():
        # docker-py leaves the socket of a refused connection to the garbage collector.
        warnings.simplefilter("ignore", ResourceWarning)
        answers = _docker_ping()
        gc.collect()
    return answers


def _docker_ping() -> bool:
    from docker.errors import DockerException
    from requests.exceptions import RequestException
    from testcontainers.core.docker_client import DockerClient

    try:
        client = DockerClient(timeout=10).client
    except (DockerException, RequestException, OSError):
        return False
    try:
        return bool(client.ping())
    except (DockerException, RequestException, OSError):
        return False
    finally:
        client.close()


def resolve(
    *,
    env_var: str,
    local_default: str,
    start_container: Callable[[], tuple[str, AbstractContextManager[object]]],
    what: str,
) -> Resolved:
    """Take `env_var`, else `local_default` if it answers, else a testcontainer, else fail."""
    explicit = os.environ.get(env_var)
    if explicit:
        return Resolved(explicit, f"${env_var}")
    if is_reachable(local_default):
        return Resolved(local_default, "local default")
    if docker_engine_available():
        url, container = start_container()

        def _stop() -> None:
            container.__exit__(None, None, None)

        return Resolved(url, "testcontainers", [_stop])
    raise RuntimeError(
        f"No {what} for the tests: set {env_var}, start one at {local_default}, "
        "or provide a Docker engine for testcontainers."
    )
