"""`make up`'s suite (scripts/bazaar_suite.py): what runs before any service starts."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path
from types import ModuleType

import pytest

SERVICES = ("auth", "catalog", "orders")


def _suite_module(repo_root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bazaar_suite", repo_root / "scripts" / "bazaar_suite.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _listening_port() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server, server.getsockname()[1]


def _closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


def _pin_broker(monkeypatch: pytest.MonkeyPatch, port: int) -> str:
    url = f"amqp://guest:guest@127.0.0.1:{port}/"
    for name in SERVICES:
        monkeypatch.setenv(f"{name.upper()}_AMQP_URL", url)
    monkeypatch.setenv("GATEWAY_REDIS_URL", "redis://127.0.0.1:6379/0")
    return url


def test_make_up_declares_every_services_queues_after_migrating_before_anything_starts(
    repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, port = _listening_port()  # a broker that answers
    try:
        _pin_broker(monkeypatch, port)
        suite = _suite_module(repo_root).build()
    finally:
        server.close()
    steps = {step["chain"]: step for step in suite["prepare"]}
    assert set(steps) == set(SERVICES)
    for name, step in steps.items():
        argv = step["argv"]
        assert argv[argv.index(name) + 1 :][:3] == ["create-db", "migrate", "topology"]
    # Prepare steps all end before the first program starts (scripts/supervise_prepare.py).
    assert [p["name"] for p in suite["programs"]] == [*SERVICES, "gateway"]


def test_make_up_hands_the_programs_broker_default_to_the_topology_step(
    repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, port = _listening_port()
    module = _suite_module(repo_root)
    url = f"amqp://guest:guest@127.0.0.1:{port}/"
    for name in SERVICES:
        # Set, then removed: monkeypatch restores it, whatever build() writes to os.environ.
        monkeypatch.setenv(f"{name.upper()}_AMQP_URL", "unset")
        monkeypatch.delenv(f"{name.upper()}_AMQP_URL")
        monkeypatch.setitem(module.DEV_DEFAULTS, f"{name.upper()}_AMQP_URL", url)
    monkeypatch.setattr(module, "_dotenv_keys", lambda: {"GATEWAY_REDIS_URL"})
    try:
        suite = module.build()
    finally:
        server.close()
    for step in suite["prepare"]:
        prefix = step["chain"].upper()
        assert step["argv"][:2] == ["env", f"{prefix}_AMQP_URL={url}"]


def test_make_up_never_skips_the_topology_step_and_names_the_broker_when_it_fails(
    repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A broker that does not answer now: the step still runs (it waits for the broker) and,
    # if it fails, make up stops before any service starts, saying what to check.
    _pin_broker(monkeypatch, _closed_port())
    suite = _suite_module(repo_root).build()
    for step in suite["prepare"]:
        argv = step["argv"]
        name = step["chain"]
        assert argv[argv.index(name) + 1 :][:3] == ["create-db", "migrate", "topology"]
        assert "is RabbitMQ running?" in step["hint"]
