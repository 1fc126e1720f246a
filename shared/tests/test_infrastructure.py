"""Which infrastructure a test run uses: the env var, else the local default, else a container."""

from __future__ import annotations

import socket
from contextlib import nullcontext

import pytest

from bazaar.shared.testing import infrastructure
from bazaar.shared.testing.infrastructure import is_reachable, resolve


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
