"""Print the Bazaar suite for scripts/supervise.py as JSON: prepare steps, programs, banner.

Run with the project's virtual environment (`.venv/bin/python scripts/bazaar_suite.py
[--run-dir .run]`): it reads each process's effective settings (environment, then `.env`,
then defaults) to know where it listens. Development defaults for the broker and Redis are
added only where neither the environment nor `.env` sets them.

A local Prometheus (Debian's `prometheus`) joins the suite unless MONITORING=0: it scrapes
every process (deploy/monitoring/prometheus/prometheus-local.yml, written to the run
directory with the ports really used) with the rules of deploy/monitoring/prometheus/rules
loaded, on 127.0.0.1:PROMETHEUS_PORT (9090), its data in <run dir>/prometheus.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

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
    # The response cache hears catalog.* events: entries live their s-maxage, not 1 s.
    "GATEWAY_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
}
MONITORING = ROOT / "deploy" / "monitoring" / "prometheus"
#: Where make up's Prometheus listens unless PROMETHEUS_PORT says otherwise.
PROMETHEUS_PORT = 9090


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


def build(run_dir: Path | None = None) -> dict[str, object]:
    """The suite: every present service, the gateway in front of them, then Prometheus.

    Prometheus needs a run directory (its configuration and data live there): without one
    it is left out.
    """
    preset = set(os.environ) | _dotenv_keys()
    env = {k: v for k, v in DEV_DEFAULTS.items() if k not in preset}
    os.environ.update(env)  # so the settings read below are the ones the programs will get
    services = [s for s in SERVICES if _present(s)]
    prepare: list[dict[str, object]] = []
    programs: list[dict[str, object]] = []
    lines: list[str] = []
    scraped: dict[str, str] = {}  # job -> host:port
    for name in services:
        settings = _settings(name)
        prefix = name.upper()
        db = urlsplit(settings.dsn())
        where = f"{db.hostname}:{db.port or 5432}"
        # The broker's queues and bindings before any service starts, so no event finds its
        # consumers' queue missing. Never skipped: the step waits for the broker (up to
        # 120 s) and make up fails, naming RabbitMQ, if it never answers; a service started
        # without it would publish into a broker lacking its consumers' queues. Demo data
        # only where there is some (catalog's products).
        commands = [
            "create-db",
            "migrate",
            "topology",
            *(["seed"] if name == "catalog" else []),
        ]
        # The prepare steps get the supervisor's environment, not the programs' defaults.
        amqp = f"{prefix}_AMQP_URL"
        pinned = ["env", f"{amqp}={env[amqp]}"] if amqp in env else []
        prepare.append(
            {
                "label": f"{name}: {', '.join(commands)}",
                "chain": name,
                "argv": [
                    *pinned,
                    str(BIN / "python"),
                    str(ROOT / "scripts" / "prepare_service.py"),
                    name,
                    *commands,
                ],
                "hint": f"is PostgreSQL running at {where}? ({prefix}_DATABASE_URL sets it)"
                + f"; is RabbitMQ running? ({amqp} sets it; the queues are declared before "
                "any service starts)",
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
        scraped[name] = _address(host, port)
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
    scraped["gateway"] = _address(host, port)
    warnings = _warnings(gateway)
    monitoring = None if run_dir is None else _prometheus(scraped, run_dir, warnings)
    if monitoring is not None:
        programs.append(monitoring)
    auth = AuthSettings()
    email = auth.admin_email
    development = auth.environment == "development"
    shown = auth.admin_password.get_secret_value() if development else "(AUTH_ADMIN_PASSWORD)"
    banner = f"""
Bazaar is up at {url}  (the gateway: clients talk only to it)
{_metrics_line(monitoring)}  docs      {url}/docs
  try       curl {url}/v1/products
  admin     {email} / {shown}
            curl -d grant_type=password -d username={email} -d password={shown} {url}/v1/auth/token
  services  {", ".join(lines)} (direct, for debugging)"""
    if not complete:
        missing = ", ".join(s for s in SERVICES if s not in services)
        banner += f"\n  not yet built: {missing} (the gateway answers 502 for its routes)"
    return {
        "title": "Bazaar",
        "hint": f"gateway {url}, docs {url}/docs; state: .run/supervisor.json",
        "prepare": prepare,
        "programs": [{**p, "env": env} for p in programs],
        "banner": banner + "".join(f"\n  note      {w}" for w in warnings),
    }


def _address(host: str, port: int) -> str:
    """Where Prometheus reaches a process listening on host:port (any address: the loopback)."""
    return f"{'127.0.0.1' if host in ('0.0.0.0', '::', 'localhost') else host}:{port}"


def prometheus_config(
    targets: dict[str, str], *, rules: Path, interval: str | None = None
) -> dict[str, Any]:
    """make up's Prometheus configuration: prometheus-local.yml's jobs at these addresses.

    Jobs keep their names (the rules select on `job`); a job with no address given is left
    out. The rule path is made absolute, as the file is read from the run directory.
    """
    config: dict[str, Any] = yaml.safe_load((MONITORING / "prometheus-local.yml").read_text())
    config["rule_files"] = [str(rules / Path(p).name) for p in config["rule_files"]]
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in targets:
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
            jobs.append(job)
    config["scrape_configs"] = jobs
    if interval is not None:
        config["global"] = {"scrape_interval": interval, "evaluation_interval": interval}
    return config


def _prometheus(
    scraped: dict[str, str], run_dir: Path, warnings: list[str]
) -> dict[str, object] | None:
    """The Prometheus program (None when MONITORING=0, or it cannot run: a note says why)."""
    if os.environ.get("MONITORING", "").strip() in ("0", "false", "no", "off"):
        return None
    binary = shutil.which("prometheus")
    if binary is None:
        warnings.append(
            "no Prometheus: `prometheus` is not installed (apt-get install prometheus, or "
            "scripts/ensure-prometheus.sh); MONITORING=0 says you do not want it"
        )
        return None
    port = int(os.environ.get("PROMETHEUS_PORT") or PROMETHEUS_PORT)
    address = f"127.0.0.1:{port}"
    if _reachable(f"http://{address}", port):
        warnings.append(
            f"no Prometheus: {address} is taken by another process (PROMETHEUS_PORT=… picks "
            "another port, MONITORING=0 leaves it out)"
        )
        return None
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)  # a fresh clone has no .run/ yet
    config = run_dir / "prometheus.yml"
    body = prometheus_config({**scraped, "prometheus": address}, rules=MONITORING / "rules")
    config.write_text(
        "# Written by scripts/bazaar_suite.py from deploy/monitoring/prometheus/"
        "prometheus-local.yml\n" + yaml.safe_dump(body, sort_keys=False)
    )
    return {
        "name": "prometheus",
        "argv": [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={run_dir / 'prometheus'}",
            "--storage.tsdb.retention.time=7d",
            f"--web.listen-address={address}",
            "--web.enable-lifecycle",  # POST /-/reload after editing a rule
        ],
        "ready_url": f"http://{address}/-/ready",
    }


def _metrics_line(monitoring: dict[str, object] | None) -> str:
    if monitoring is None:
        return ""
    where = urlsplit(str(monitoring["ready_url"]))
    url = _public(where.hostname or "127.0.0.1", where.port or PROMETHEUS_PORT)
    return f"  metrics   {url}  (Prometheus: graphs, /alerts, /rules; MONITORING=0 leaves it out)\n"


def _warnings(gateway: GatewaySettings) -> list[str]:
    notes = []
    redis = gateway.redis_url
    if redis and not _reachable(redis, 6379):
        notes.append(f"Redis at {redis} does not answer: each gateway counts rate limits alone")
    return notes


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run")
    json.dump(build(parser.parse_args().run_dir), sys.stdout, indent=2)
    sys.stdout.write("\n")
