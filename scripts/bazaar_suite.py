"""Print the Bazaar suite for scripts/supervise.py as JSON: prepare steps, programs, banner.

Run with the project's virtual environment (`.venv/bin/python scripts/bazaar_suite.py`): it
reads each process's effective settings (environment, then `.env`, then defaults) to know
where it listens. Development defaults for the broker and Redis are added only where
neither the environment nor `.env` sets them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from bazaar.auth.config import AuthSettings
from bazaar.gateway.config import GatewaySettings
from bazaar.shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
#: The services in start order; one joins the suite once its command line exists.
SERVICES = ("auth", "catalog", "orders")
DEV_DEFAULTS = {
    "AUTH_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
    "CATALOG_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
    "ORDERS_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
    "GATEWAY_REDIS_URL": "redis://127.0.0.1:6379/0",
}


def _settings(name: str) -> ServiceSettings:
    """A service's effective settings (its class is `<Name>Settings` in `bazaar.<name>.config`)."""
    cls = getattr(importlib.import_module(f"bazaar.{name}.config"), f"{name.title()}Settings")
    settings = cls()
    assert isinstance(settings, ServiceSettings)
    return settings


def _dotenv_keys() -> set[str]:
    path = ROOT / ".env"
    if not path.exists():
        return set()
    lines = (line.strip() for line in path.read_text().splitlines())
    return {
        line.removeprefix("export ").split("=", 1)[0].strip()
        for line in lines
        if "=" in line and not line.startswith("#")
    }


def _public(host: str, port: int) -> str:
    return f"http://{'localhost' if host in ('0.0.0.0', '127.0.0.1', '::') else host}:{port}"


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def _present(name: str) -> bool:
    return importlib.util.find_spec(f"bazaar.{name}.cli") is not None


def build() -> dict[str, object]:
    """The suite: every present service, then the gateway in front of them."""
    preset = set(os.environ) | _dotenv_keys()
    env = {k: v for k, v in DEV_DEFAULTS.items() if k not in preset}
    os.environ.update(env)  # so the settings read below are the ones the programs will get
    services = [s for s in SERVICES if _present(s)]
    prepare: list[dict[str, object]] = []
    programs: list[dict[str, object]] = []
    lines: list[str] = []
    for name in services:
        settings = _settings(name)
        prefix = name.upper()
        db = urlsplit(settings.dsn())
        where = f"{db.hostname}:{db.port or 5432}"
        # Demo data only where there is some (catalog's products).
        commands = ["create-db", "migrate", *(["seed"] if name == "catalog" else [])]
        prepare.append(
            {
                "label": f"{name}: {', '.join(commands)}",
                "chain": name,
                "argv": [
                    str(BIN / "python"),
                    str(ROOT / "scripts" / "prepare_service.py"),
                    name,
                    *commands,
                ],
                "hint": f"is PostgreSQL running at {where}? ({prefix}_DATABASE_URL sets it)",
            }
        )
        host, port = settings.host, settings.port
        programs.append(
            {
                "name": name,
                "argv": [str(BIN / f"bazaar-{name}"), "serve"],
                "ready_url": f"http://{host}:{port}/readyz",
            }
        )
        lines.append(f"{name} {_public(host, port)}")
    gateway = GatewaySettings()
    host, port = gateway.host, gateway.port
    # The gateway's /readyz asks every upstream; until all exist, it is alive but not ready.
    complete = len(services) == len(SERVICES)
    probe = "readyz" if complete else "healthz"
    programs.append(
        {
            "name": "gateway",
            "argv": [str(BIN / "bazaar-gateway"), "serve"],
            "ready_url": f"http://{host}:{port}/{probe}",
        }
    )
    url = _public(host, port)
    auth = AuthSettings()
    email = auth.admin_email
    development = auth.environment == "development"
    shown = auth.admin_password.get_secret_value() if development else "(AUTH_ADMIN_PASSWORD)"
    banner = f"""
Bazaar is up at {url}  (the gateway: clients talk only to it)
  docs      {url}/docs
  try       curl {url}/v1/products
  admin     {email} / {shown}
            curl -d grant_type=password -d username={email} -d password={shown} {url}/v1/auth/token
  services  {", ".join(lines)} (direct, for debugging)"""
    if not complete:
        missing = ", ".join(s for s in SERVICES if s not in services)
        banner += f"\n  not yet built: {missing} (the gateway answers 502 for its routes)"
    warnings = _warnings(env, gateway)
    return {
        "title": "Bazaar",
        "hint": f"gateway {url}, docs {url}/docs; state: .run/supervisor.json",
        "prepare": prepare,
        "programs": [{**p, "env": env} for p in programs],
        "banner": banner + "".join(f"\n  note      {w}" for w in warnings),
    }


def _warnings(env: dict[str, str], gateway: GatewaySettings) -> list[str]:
    notes = []
    redis = gateway.redis_url
    if redis and not _reachable(redis, 6379):
        notes.append(f"Redis at {redis} does not answer: each gateway counts rate limits alone")
    amqp = env.get("ORDERS_AMQP_URL") or os.environ.get("ORDERS_AMQP_URL")
    if amqp and not _reachable(amqp, 5672):
        notes.append(f"RabbitMQ at {urlsplit(amqp).hostname} does not answer: events wait")
    return notes


if __name__ == "__main__":
    json.dump(build(), sys.stdout, indent=2)
    sys.stdout.write("\n")
