"""End-to-end order placement through the gateway, beside pgbench for scale.

    uv run python bench/orders.py            # about 2 minutes; prints the table

What runs: auth, catalog, orders and the gateway as real processes (their `serve` commands),
each with its own fresh database on the local PostgreSQL and its outbox relay publishing to a
RabbitMQ vhost of its own. Load: wrk through the gateway, every request a new order with its
own Idempotency-Key (one line, spread over a few products), so each is a real reservation in
catalog and real transactions in orders. The gateway's per-user rate limit is raised for the
run (one customer places every order). Everything listens on 127.0.0.1; nothing is pinned,
the whole machine is shared, as in production on a 2-core box.

Printed: answers per second (wrk), confirmed orders per second as stored, the
latency p50/p99 wrk saw, and pgbench's TPS (simple-update and TPC-B-like) on the same server.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
PG = "postgresql://postgres@127.0.0.1:5432"
AMQP = "amqp://guest:guest@127.0.0.1:5672"
SERVICES = ("auth", "catalog", "orders")
PRODUCTS = 8

LUA = """
local counter = 0
local products = {%(products)s}
function setup(thread)
  thread:set("thread_id", tostring(math.random(1, 1e9)) .. "-%(run)s")
end
function request()
  counter = counter + 1
  local product = products[(counter %% #products) + 1]
  local body = '{"lines":[{"product_id":"' .. product .. '","quantity":1}]}'
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["Authorization"] = "Bearer %(token)s"
  headers["Idempotency-Key"] = "bench-" .. thread_id .. "-" .. counter
  return wrk.format("POST", "/v1/orders", headers, body)
end
local shown = 0
function response(status, headers, body)
  if status >= 300 and shown < 3 then
    shown = shown + 1
    io.write("non-2xx: " .. status .. " " .. body .. "\\n")
  end
end
"""


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_tools() -> None:
    """wrk and pgbench (Debian packages): installed when missing."""
    missing = [tool for tool in ("wrk", "pgbench") if shutil.which(tool) is None]
    if missing:
        packages = ["wrk" if t == "wrk" else "postgresql-contrib" for t in missing]
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True)


def rabbitmqctl(*args: str) -> None:
    """Run rabbitmqctl quietly (vhost set-up and clean-up)."""
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True)


def call(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One HTTP call with the standard library; (status, parsed JSON body)."""
    data = None
    sent = dict(headers or {})
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=sent, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_ready(url: str, proc: subprocess.Popen[bytes], name: str) -> None:
    """Poll until the URL answers 200; stop if the process died."""
    for _ in range(300):
        if proc.poll() is not None:
            sys.exit(f"{name} exited with {proc.returncode}; see {name}.log in the work dir")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            time.sleep(0.1)
    sys.exit(f"{name} did not become ready at {url}")


class Suite:
    """The three services and the gateway, on fresh databases and a vhost of their own."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.tag = f"{os.getpid()}"
        self.vhost = f"bazaar-bench-{self.tag}"
        self.ports = {name: free_port() for name in (*SERVICES, "gateway")}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, name: str) -> str:
        """Base URL of a process."""
        return f"http://127.0.0.1:{self.ports[name]}"

    def env(self, name: str) -> dict[str, str]:
        """The environment of one process: its port, database, broker and peers."""
        prefix = name.upper() + "_"
        env = {
            f"{prefix}PORT": str(self.ports[name]),
            f"{prefix}LOG_LEVEL": "WARNING",
            f"{prefix}JWT_JWKS_URL": f"{self.url('auth')}/.well-known/jwks.json",
        }
        if name in SERVICES:
            env[f"{prefix}DATABASE_URL"] = f"{PG}/bazaar_bench_{name}_{self.tag}"
            env[f"{prefix}AMQP_URL"] = f"{AMQP}/{urllib.parse.quote(self.vhost, safe='')}"
        if name == "orders":
            env["ORDERS_CATALOG_URL"] = self.url("catalog")
            env["ORDERS_AUTH_URL"] = self.url("auth")
        if name == "gateway":
            env["GATEWAY_UPSTREAMS"] = json.dumps({s: {"url": self.url(s)} for s in SERVICES})
            # One customer places every order: lift the per-user policy for the run.
            env["GATEWAY_RATE_LIMITS"] = json.dumps(
                {
                    "user": {"quota": 10_000_000, "window": 60},
                    "anonymous": {"quota": 10_000_000, "window": 60},
                    "token": {"quota": 10_000_000, "window": 60},
                }
            )
        return {**os.environ, **env}

    def start(self) -> None:
        """Create databases and the vhost, migrate, start everything, wait until ready."""
        rabbitmqctl("add_vhost", self.vhost)
        rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        for name in SERVICES:
            for command in ("create-db", "migrate"):
                subprocess.run(
                    [str(BIN / f"bazaar-{name}"), command],
                    env=self.env(name),
                    check=True,
                    capture_output=True,
                )
        for name in (*SERVICES, "gateway"):
            log = (self.work / f"{name}.log").open("wb")
            self.procs[name] = subprocess.Popen(
                [str(BIN / f"bazaar-{name}"), "serve"],
                env=self.env(name),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            path = "/healthz" if name == "gateway" else "/readyz"
            wait_ready(self.url(name) + path, self.procs[name], name)

    def stop(self) -> None:
        """Stop the processes, drop the databases, delete the vhost."""
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for name in SERVICES:
            subprocess.run(
                [
                    "psql",
                    PG + "/postgres",
                    "-qc",
                    f"DROP DATABASE IF EXISTS bazaar_bench_{name}_{self.tag} WITH (FORCE)",
                ],
                capture_output=True,
                check=False,
            )
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", self.vhost], capture_output=True, check=False
        )

    def psql(self, service: str, sql: str) -> str:
        """One value from a service's database."""
        db = f"{PG}/bazaar_bench_{service}_{self.tag}"
        return subprocess.run(
            ["psql", db, "-tAc", sql], capture_output=True, text=True, check=True
        ).stdout.strip()


def seed(suite: Suite) -> tuple[list[str], str]:
    """Products with ample stock (as the demo admin), and one customer's token."""
    gateway = suite.url("gateway")
    admin_out = subprocess.run(
        [str(BIN / "bazaar-auth"), "dev-login"],
        env=suite.env("auth"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    status, token = call(
        "POST",
        f"{gateway}/v1/auth/token",
        form={"grant_type": "password", "username": admin_out[0], "password": admin_out[1]},
    )
    assert status == 200, token
    admin = {"Authorization": f"Bearer {token['access_token']}"}
    products = []
    for i in range(PRODUCTS):
        status, product = call(
            "POST",
            f"{gateway}/v1/products",
            {
                "sku": f"BENCH-{i}",
                "name": f"Bench product {i}",
                "price_cents": 100 + i,
                "currency": "EUR",
                "stock": 1_000_000,
            },
            admin,
        )
        assert status == 201, product
        products.append(product["id"])
    customer = {"email": "bench@bazaar.test", "password": "bench customer password", "name": "B"}
    status, body = call("POST", f"{gateway}/v1/users", customer)
    assert status == 201, body
    status, token = call(
        "POST",
        f"{gateway}/v1/auth/token",
        form={
            "grant_type": "password",
            "username": customer["email"],
            "password": customer["password"],
        },
    )
    assert status == 200, token
    return products, token["access_token"]


_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(suite: Suite, load: dict[str, str], connections: int, seconds: int) -> dict[str, float]:
    """Place orders for `seconds` over `connections`; return rates and latencies.

    Every run writes its own script with a run id of its own, so no Idempotency-Key is ever
    sent twice (a replay would be answered from the store and flatter the figures).
    """
    script = suite.work / f"orders-{connections}-{time.monotonic_ns()}.lua"
    script.write_text(LUA % {**load, "run": f"{os.getpid()}-{time.monotonic_ns()}"})
    before = int(
        suite.psql("orders", "SELECT count(*) FROM customer_order WHERE status = 'confirmed'")
    )
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            suite.url("gateway"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = int(
        suite.psql("orders", "SELECT count(*) FROM customer_order WHERE status = 'confirmed'")
    )
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    non2xx_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(non2xx_match[1]) if non2xx_match else 0
    lat = {m[1]: float(m[2]) * _UNITS[m[3]] for m in _LATENCY.finditer(out)}
    for line in sorted(set(re.findall(r"^non-2xx: .*$", out, re.M)))[:3]:
        print(f"  ({connections} connections) {line[:300]}")
    return {
        "requests/s": rps,
        "confirmed/s": (after - before) / seconds,
        "non-2xx": non2xx,
        "requests": total,
        "p50 ms": lat.get("50", 0.0),
        "p99 ms": lat.get("99", 0.0),
    }


def pgbench(seconds: int) -> dict[str, float]:
    """pgbench TPS on the same server: simple-update (-N) and TPC-B-like, 8 clients."""
    name = f"bazaar_bench_pgbench_{os.getpid()}"
    url = f"{PG}/{name}"
    subprocess.run(
        ["psql", PG + "/postgres", "-qc", f"CREATE DATABASE {name}"],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(["pgbench", "-i", "-q", "-s", "10", url], check=True, capture_output=True)
        results = {}
        for label, flags in (("simple-update", ["-N"]), ("TPC-B-like", [])):
            out = subprocess.run(
                ["pgbench", "-c", "8", "-j", "2", "-T", str(seconds), *flags, url],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[label] = float(re.search(r"tps = ([\d.]+)", out)[1])  # type: ignore[index]
        return results
    finally:
        subprocess.run(
            ["psql", PG + "/postgres", "-qc", f"DROP DATABASE {name} WITH (FORCE)"],
            capture_output=True,
            check=False,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15, help="length of each wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--skip-pgbench", action="store_true")
    args = parser.parse_args()
    ensure_tools()
    work = Path(tempfile.mkdtemp(prefix="bazaar-bench-orders-"))
    suite = Suite(work)
    try:
        suite.start()
        products, token = seed(suite)
        load = {"products": ", ".join(f'"{p}"' for p in products), "token": token}
        wrk(suite, load, 8, 3)  # warm-up: pools, caches, the JIT-less interpreter's caches
        rows = [(c, wrk(suite, load, c, args.seconds)) for c in args.connections]
        reservations = suite.psql("catalog", "SELECT count(*) FROM reservation")
        orders = suite.psql("orders", "SELECT count(*) FROM customer_order")
        confirmed = suite.psql(
            "orders", "SELECT count(*) FROM customer_order WHERE status = 'confirmed'"
        )
    finally:
        suite.stop()
    print(f"\nOrders through the gateway ({args.seconds} s per run, work dir {work})")
    print(
        f"{'connections':>11} {'answers/s':>9} {'confirmed/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}"
    )
    for connections, row in rows:
        print(
            f"{connections:>11} {row['requests/s']:>9.0f} {row['confirmed/s']:>11.0f} "
            f"{row['p50 ms']:>8.1f} {row['p99 ms']:>8.1f} {row['non-2xx']:>8.0f}"
        )
    print(
        f"stored: {orders} orders, {confirmed} confirmed; catalog holds {reservations} reservations"
    )
    if not args.skip_pgbench:
        tps = pgbench(max(5, args.seconds // 2))
        print(
            "pgbench on the same server (8 clients): "
            + ", ".join(f"{k} {v:.0f} TPS" for k, v in tps.items())
        )


if __name__ == "__main__":
    main()
