"""The Bazaar suite under test: built by scripts/bazaar_suite.py, run by scripts/supervise.py.

Every process gets a free port and points at the soak's infrastructure through its settings
(`<SVC>_DATABASE_URL`, `<SVC>_AMQP_URL`, `GATEWAY_REDIS_URL`, the peers' URLs). The
supervisor is the project's own: it prepares (create-db, migrate, seed, and whatever else
`make up` prepares), starts every program and restarts one that dies, as in `make up`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bazaar.shared.testing.private import free_port, note_session, signal_session

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
SERVICES = ("auth", "catalog", "orders")
PROGRAMS = (*SERVICES, "gateway")
PREFIXES = tuple(f"{name.upper()}_" for name in PROGRAMS)


@dataclass(frozen=True)
class Infra:
    """Where the suite's PostgreSQL server, broker (with vhost) and Redis are."""

    postgres: str  # postgresql://user@host:port (no database)
    amqp: str  # amqp://…/vhost
    redis: str
    db_prefix: str  # database names: <db_prefix>_<service>


def is_ready(url: str) -> bool:
    """Whether a readiness URL answers 200 right now."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as answer:
            return bool(answer.status == 200)
    except (OSError, ValueError, urllib.error.HTTPError):
        return False


class Suite:
    """Auth, catalog, orders and the gateway under the project's supervisor."""

    def __init__(self, work: Path, infra: Infra) -> None:
        self.work = work
        self.infra = infra
        self.run_dir = work / "logs"
        self.ports = {name: free_port() for name in PROGRAMS}
        self.supervisor: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        """A process's base URL."""
        return f"http://127.0.0.1:{self.ports[name]}"

    def database_url(self, service: str) -> str:
        """A service's database URL."""
        return f"{self.infra.postgres}/{self.infra.db_prefix}_{service}"

    def env(self) -> dict[str, str]:
        """The environment of the supervisor and so of every program (no stray settings)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}
        jwks = f"{self.url('auth')}/.well-known/jwks.json"
        for name in PROGRAMS:
            prefix = name.upper()
            env[f"{prefix}_PORT"] = str(self.ports[name])
            env[f"{prefix}_HOST"] = "127.0.0.1"
            env[f"{prefix}_LOG_LEVEL"] = "WARNING"
            if name != "auth":
                env[f"{prefix}_JWT_JWKS_URL"] = jwks
        for name in SERVICES:
            env[f"{name.upper()}_DATABASE_URL"] = self.database_url(name)
            env[f"{name.upper()}_AMQP_URL"] = self.infra.amqp
        env["AUTH_ACCESS_TOKEN_TTL_SECONDS"] = "3600"  # one login per customer per soak
        env["ORDERS_CATALOG_URL"] = self.url("catalog")
        env["ORDERS_AUTH_URL"] = self.url("auth")
        env["GATEWAY_REDIS_URL"] = self.infra.redis
        env["GATEWAY_AMQP_URL"] = self.infra.amqp  # the cache hears the private broker's events
        env["MONITORING"] = "0"  # the soak judges by its own checks, not a Prometheus on :9090
        env["GATEWAY_UPSTREAMS"] = json.dumps({s: {"url": self.url(s)} for s in SERVICES})
        return env

    def start(self, timeout: float = 240) -> None:
        """Build the suite file, start the supervisor, wait until every program is ready."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        env = self.env()
        suite = subprocess.run(
            [str(BIN / "python"), str(ROOT / "scripts" / "bazaar_suite.py")],
            env=env, cwd=self.work, capture_output=True, check=True,
        ).stdout  # fmt: skip
        (self.work / "suite.json").write_bytes(suite)
        with (self.run_dir / "supervisor.out").open("wb") as out:
            self.supervisor = subprocess.Popen(
                [sys.executable, str(ROOT / "scripts" / "supervise.py"), "up",
                 str(self.work / "suite.json"), "--run-dir", str(self.run_dir),
                 "--ready-timeout", str(timeout)],
                env=env, cwd=self.work, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        note_session(self.run_dir, self.supervisor.pid)
        deadline = time.monotonic() + timeout + 30
        while self.state().get("state") != "ready":
            if self.supervisor.poll() is not None or time.monotonic() > deadline:
                tail = (self.run_dir / "supervisor.out").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the suite did not start:\n{tail}")
            time.sleep(0.25)

    def state(self) -> dict[str, object]:
        """The supervisor's state file."""
        try:
            loaded = json.loads((self.run_dir / "supervisor.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def pid(self, name: str) -> int | None:
        """The program's current pid, as the supervisor knows it."""
        programs = self.state().get("programs")
        if not isinstance(programs, dict):
            return None
        pid = programs.get(name, {}).get("pid")
        return int(pid) if pid else None

    def ready_url(self, name: str) -> str:
        """The program's own /readyz."""
        return f"{self.url(name)}/readyz"

    def wait_back(self, name: str, old_pid: int, timeout: float = 90) -> None:
        """Wait until the supervisor has restarted `name` and the new process is ready."""
        deadline = time.monotonic() + timeout
        while True:
            pid = self.pid(name)
            if pid is not None and pid != old_pid and is_ready(self.ready_url(name)):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not back within {timeout:.0f} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the supervisor (it stops every program, gateway first)."""
        if self.supervisor is None or self.supervisor.poll() is not None:
            return
        self.supervisor.send_signal(signal.SIGTERM)
        try:
            self.supervisor.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.supervisor.pid, signal.SIGKILL)
            self.supervisor.wait()


def reap_suite(work: Path) -> list[int]:
    """SIGKILL the supervisor and its programs (each leads a session) a dead soak left behind."""
    try:
        state = json.loads((work / "logs" / "supervisor.json").read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(state, dict):
        return []
    programs = state.get("programs")
    pids = [state.get("pid")] + [p.get("pid") for p in (programs or {}).values()]
    return [int(p) for p in pids if p and signal_session(int(p), signal.SIGKILL)]
