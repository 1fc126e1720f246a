"""End-to-end order placement through the gateway: rates, latency, CPU and SQL per order.

    uv run python bench/orders.py            # about 3 minutes; prints the tables
    uv run python bench/orders.py --infra local --seconds 10 --connections 16

What runs: auth, catalog, orders and the gateway as real processes (their `serve` commands,
prepared with create-db, migrate and topology as `make up` does), each service with its own
fresh database and its outbox relay, the gateway with Redis rate limiting on. Load: wrk
through the gateway, every request a new order with its own Idempotency-Key (one line,
spread over a few products), so each is a real reservation in catalog and real
transactions in orders. The gateway's per-user rate limit is raised for the run (one
customer places every order). Everything listens on 127.0.0.1; nothing is pinned.

Infrastructure (`--infra`):

- `private` (default): a PostgreSQL 15 cluster, a Redis and a RabbitMQ node of the bench's
  own (temporary directories, free ports), so every CPU second of theirs is the run's. The
  cluster has the machine's durability and sizing (fsync on, synchronous_commit on,
  full_page_writes on, shared_buffers 128 MB, max_wal_size 1 GB, autovacuum as the
  machine's: off) plus `pg_stat_statements` preloaded, which counts the statements.
- `local`: the machine's servers (databases and a vhost named for the run). PostgreSQL's
  CPU is then only the run's backends (no WAL writer; a backend that ends within the
  window is left out, and the output says how many did), RabbitMQ's and Redis's include
  whatever else uses them, and statements are not counted (no pg_stat_statements there).

Printed per connection count: answers and confirmed orders per second, p50/p99 as wrk saw
them; CPU ms per confirmed order per process (utime+stime from /proc over the measured
window, including reaped children, divided by the orders confirmed in it); commits per
order (pg_stat_database xact_commit of the run's databases) and statements per order
(pg_stat_statements calls, BEGIN/COMMIT included: each one is a round trip). With
`--statements`, the statements behind those counts, per database. `--src DIR` runs the
programs from another checkout's sources (A/B runs against an older commit).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
PG = "postgresql://postgres@127.0.0.1:5432"
AMQP = "amqp://guest:guest@127.0.0.1:5672"
REDIS = "redis://127.0.0.1:6379/0"
SERVICES = ("auth", "catalog", "orders")
PRODUCTS = 8
#: Queries of the bench itself start with this comment, so the counts leave them out.
MARK = "/*bench*/"
#: Seconds after wrk ends before the CPU window closes: the relays publish what the last
#: orders wrote.
SETTLE_SECONDS = 2.0
#: Seconds after a load before pg_stat_database is read: a backend that goes idle less than
#: a second after its last report holds its counts back for 10 s (PostgreSQL 15's
#: PGSTAT_IDLE_INTERVAL). The relays' idle polling in that wait adds < 1 % to the commits.
STATS_SECONDS = 11.0

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


class DurablePostgres:
    """A throwaway PostgreSQL 15 cluster with the machine's durability, statements counted.

    Not `bazaar.shared.testing.private.PrivatePostgres`: that one runs with fsync and
    synchronous_commit off (the chaos soak restarts it), which would flatter every commit.
    """

    OPTIONS = (
        "-c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on"
        " -c full_page_writes=on -c shared_buffers=128MB -c max_wal_size=1GB"
        " -c min_wal_size=80MB -c autovacuum=off -c max_connections=100"
        " -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top"
        " -c pg_stat_statements.track_utility=on -c pg_stat_statements.max=5000"
    )

    def __init__(self, work: Path) -> None:
        from bazaar.shared.testing.private import PG_BIN
        from bazaar.shared.testing.private import free_port as private_port

        self.bin = PG_BIN
        self.dir = work / "postgres"
        self.dir.mkdir()
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = private_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}"

    def _run(self, *argv: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True,
            cwd=self.dir,
        )  # fmt: skip

    def start(self) -> None:
        """initdb, start, and create the pg_stat_statements extension."""
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                  "postgres", "-E", "UTF8")  # fmt: skip
        options = f"-p {self.port} -c unix_socket_directories={self.dir} {self.OPTIONS}"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.dir / "server.log"), "-o", options, "-w", "-t", "60", "start")  # fmt: skip
        psql(self.url + "/postgres", "CREATE EXTENSION pg_stat_statements")

    def postmaster(self) -> int:
        """The postmaster's pid (its tree is every PostgreSQL process of the cluster)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """Stop at once and remove the cluster."""
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def psql(url: str, sql: str) -> str:
    """Run SQL with psql; its output, unaligned, without headers."""
    return subprocess.run(
        ["psql", url, "-tAF", "\t", "-c", sql], capture_output=True, text=True, check=True
    ).stdout.strip()


@dataclass
class Infra:
    """Where PostgreSQL, RabbitMQ and Redis are, and which processes are theirs."""

    pg: str
    amqp: str
    redis: str
    private: bool
    #: name -> root pids whose process trees are that server (private ones only).
    roots: dict[str, list[int]] = field(default_factory=dict)
    stoppers: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        """Stop what the bench started (last started, first stopped)."""
        for stop in reversed(self.stoppers):
            try:
                stop()
            except Exception as exc:  # keep stopping the others
                print(f"stopping infrastructure: {exc!r}", file=sys.stderr)


def private_infra(work: Path, run_id: str) -> Infra:
    """Start PostgreSQL, Redis and RabbitMQ of the bench's own; stopped by `Infra.stop`."""
    from bazaar.shared.testing.private import PrivateRabbit, PrivateRedis

    infra = Infra("", "", "", private=True)
    try:
        # Each stop is registered before its start: a start that fails half-way (pg_ctl
        # started but the extension failed, redis-server spawned but never answered) still
        # has what it started stopped.
        postgres = DurablePostgres(work)
        infra.stoppers.append(postgres.stop)
        postgres.start()
        redis = PrivateRedis(work)
        infra.stoppers.append(redis.stop)
        redis.start()
        rabbit = PrivateRabbit(work, run_id, prefix="bench")
        infra.stoppers.append(rabbit.stop)
        rabbit.start()
    except BaseException:
        infra.stop()
        raise
    assert redis.process is not None and rabbit.process is not None
    infra.pg, infra.amqp, infra.redis = postgres.url, rabbit.url.rstrip("/"), redis.url
    infra.roots = {
        "postgres": [postgres.postmaster()],
        "rabbitmq": [rabbit.process.pid],
        "redis": [redis.process.pid],
    }
    return infra


def local_infra() -> Infra:
    """The machine's servers; RabbitMQ and Redis are sampled whole (shared with others)."""
    roots = {
        "rabbitmq": [int(p) for p in _pgrep("beam.smp")],
        "redis": [int(p) for p in _pgrep("redis-server")],
    }
    return Infra(PG, AMQP, REDIS, private=False, roots=roots)


def _pgrep(name: str) -> list[str]:
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False)
    return out.stdout.split()


def cpu_ticks() -> dict[int, tuple[int, int]]:
    """Every process: pid -> (ppid, utime+stime+cutime+cstime in clock ticks).

    Summed over a process tree, the children's times count the processes of that tree that
    ended (and were reaped) since: none is lost, none counted twice.
    """
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    return table


def tree_ticks(table: dict[int, tuple[int, int]], roots: list[int]) -> int:
    """CPU ticks of the processes `roots` and all their descendants."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        total += table[pid][1]
        todo.extend(children.get(pid, ()))
    return total


def process_ticks(pids: list[int]) -> dict[int, tuple[int, int]]:
    """These processes, those still running: pid -> (start time, utime+stime in clock ticks)."""
    found = {}
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        found[pid] = (int(fields[19]), int(fields[11]) + int(fields[12]))
    return found


def backend_ticks(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], listed: set[int]
) -> tuple[int, int]:
    """CPU ticks the backends spent between two readings; and how many ended in between.

    A backend running at both readings counts its difference; one that began in between
    (listed at the end, not running at the start) counts whole. One that ended in between
    is left out (its CPU since the start is gone with it; the machine's postmaster reaps it
    among every other database's backends), so the caller reports how many did; one that
    both began and ended in between is never seen at all.
    """
    total = 0
    for pid, (start, ticks) in after.items():
        if pid in before and before[pid][0] == start:
            total += ticks - before[pid][1]
        elif pid in listed:
            total += ticks
    ended = sum(1 for pid, (start, _) in before.items() if after.get(pid, (None, 0))[0] != start)
    return total, ended


class Suite:
    """The three services and the gateway, on fresh databases and a vhost of their own."""

    def __init__(self, work: Path, infra: Infra, src: Path | None = None) -> None:
        self.work = work
        self.infra = infra
        self.src = src
        self.tag = f"{os.getpid()}"
        self.vhost = "/" if infra.private else f"bazaar-bench-{self.tag}"
        self.ports = {name: free_port() for name in (*SERVICES, "gateway")}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, name: str) -> str:
        """Base URL of a process."""
        return f"http://127.0.0.1:{self.ports[name]}"

    def database(self, name: str) -> str:
        """The database of a service."""
        return f"bazaar_bench_{name}_{self.tag}"

    def env(self, name: str) -> dict[str, str]:
        """The environment of one process: its port, database, broker and peers."""
        prefix = name.upper() + "_"
        env = {
            f"{prefix}PORT": str(self.ports[name]),
            f"{prefix}LOG_LEVEL": "WARNING",
            f"{prefix}JWT_JWKS_URL": f"{self.url('auth')}/.well-known/jwks.json",
        }
        if self.src is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                str(p) for p in sorted(self.src.glob("*/src")) + sorted(self.src.glob("*/*/src"))
            )
        if name in SERVICES:
            env[f"{prefix}DATABASE_URL"] = f"{self.infra.pg}/{self.database(name)}"
            env[f"{prefix}AMQP_URL"] = (
                f"{self.infra.amqp}/{urllib.parse.quote(self.vhost, safe='')}"
            )
        if name == "orders":
            env["ORDERS_CATALOG_URL"] = self.url("catalog")
            env["ORDERS_AUTH_URL"] = self.url("auth")
        if name == "gateway":
            env["GATEWAY_UPSTREAMS"] = json.dumps({s: {"url": self.url(s)} for s in SERVICES})
            env["GATEWAY_REDIS_URL"] = self.infra.redis
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
        """Create databases (and the vhost), prepare as `make up` does, start, wait until ready."""
        if not self.infra.private:
            rabbitmqctl("add_vhost", self.vhost)
            rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        prepare = (self.src or ROOT) / "scripts" / "prepare_service.py"
        for name in SERVICES:
            subprocess.run(
                [str(BIN / "python"), str(prepare), name, "create-db", "migrate", "topology"],
                env=self.env(name),
                check=True,
                capture_output=True,
            )
        for name in (*SERVICES, "gateway"):
            # The child has its own copy of the descriptor: ours is closed at once.
            with (self.work / f"{name}.log").open("wb") as log:
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
                proc.wait()
        if self.infra.private:
            return  # the whole cluster and node go
        for name in SERVICES:
            subprocess.run(
                ["psql", PG + "/postgres", "-qc",
                 f"DROP DATABASE IF EXISTS {self.database(name)} WITH (FORCE)"],
                capture_output=True, check=False,
            )  # fmt: skip
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", self.vhost], capture_output=True, check=False
        )

    def psql(self, service: str, sql: str) -> str:
        """One value from a service's database."""
        return psql(f"{self.infra.pg}/{self.database(service)}", MARK + " " + sql)

    def databases(self) -> str:
        """The run's databases as an SQL array literal."""
        return "ARRAY[" + ", ".join(f"'{self.database(s)}'" for s in SERVICES) + "]"

    def commits(self) -> dict[str, int]:
        """Committed transactions so far, per service database."""
        rows = psql(
            f"{self.infra.pg}/postgres",
            f"{MARK} SELECT datname, xact_commit FROM pg_stat_database"
            f" WHERE datname = ANY({self.databases()})",
        )
        by_db = dict(line.split("\t") for line in rows.splitlines())
        return {s: int(by_db.get(self.database(s), 0)) for s in SERVICES}

    def backends(self) -> list[int]:
        """Pids of the PostgreSQL backends serving the run's databases."""
        rows = psql(
            f"{self.infra.pg}/postgres",
            f"{MARK} SELECT pid FROM pg_stat_activity WHERE datname = ANY({self.databases()})",
        )
        return [int(p) for p in rows.split()]

    def reset_statements(self) -> None:
        """Start counting statements afresh (private cluster only)."""
        if self.infra.private:
            psql(f"{self.infra.pg}/postgres", f"{MARK} SELECT pg_stat_statements_reset()")

    def statements(self) -> list[tuple[str, int, str]]:
        """(service, calls, normalised query) of every statement since the reset."""
        if not self.infra.private:
            return []
        rows = psql(
            f"{self.infra.pg}/postgres",
            f"{MARK} SELECT d.datname, s.calls, regexp_replace(s.query, '\\s+', ' ', 'g')"
            " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            f" WHERE d.datname = ANY({self.databases()}) AND s.query NOT LIKE '{MARK}%'",
        )
        names = {self.database(s): s for s in SERVICES}
        found = []
        for line in rows.splitlines():
            db, calls, query = line.split("\t", 2)
            found.append((names[db], int(calls), query))
        return found


def admin_headers(auth_env: dict[str, str], token_url: str) -> dict[str, str]:
    """The development admin's bearer header (its login from `bazaar-auth dev-login`)."""
    done = subprocess.run(
        [str(BIN / "bazaar-auth"), "dev-login"],
        env=auth_env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bazaar-auth dev-login exited {done.returncode}: {done.stderr[-2000:]}")
    login = done.stdout.split()
    status, token = call(
        "POST",
        token_url,
        form={"grant_type": "password", "username": login[0], "password": login[1]},
    )
    assert status == 200, token
    return {"Authorization": f"Bearer {token['access_token']}"}


def create_products(
    products_url: str, admin: dict[str, str], count: int, *, sku: str, name: str
) -> list[str]:
    """`count` products with ample stock; their ids."""
    ids = []
    for i in range(count):
        body = {
            "sku": f"{sku}-{i}",
            "name": f"{name} {i}",
            "price_cents": 100 + i,
            "currency": "EUR",
            "stock": 1_000_000,
        }
        status, product = call("POST", products_url, body, admin)
        assert status == 201, product
        ids.append(product["id"])
    return ids


def seed(suite: Suite) -> tuple[list[str], str]:
    """Products with ample stock (as the demo admin), and one customer's token."""
    gateway = suite.url("gateway")
    admin = admin_headers(suite.env("auth"), f"{gateway}/v1/auth/token")
    products = create_products(
        f"{gateway}/v1/products", admin, PRODUCTS, sku="BENCH", name="Bench product"
    )
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
#: The processes whose CPU is tabled, in this order (wrk, the load, is shown apart).
GROUPS = ("gateway", "auth", "catalog", "orders", "postgres", "rabbitmq", "redis")


@dataclass
class Run:
    """What one wrk run at one connection count measured."""

    connections: int
    figures: dict[str, float]
    cpu_ms: dict[str, float]
    commits: dict[str, float]
    statements: dict[str, float]
    queries: list[tuple[str, float, str]]


def _cpu(suite: Suite, table: dict[int, tuple[int, int]]) -> dict[str, int]:
    ticks = {name: tree_ticks(table, [suite.procs[name].pid]) for name in (*SERVICES, "gateway")}
    for name, roots in suite.infra.roots.items():
        ticks[name] = tree_ticks(table, roots)
    return ticks


def wrk(suite: Suite, load: dict[str, str], connections: int, seconds: int) -> Run:
    """Place orders for `seconds` over `connections`; what it cost per confirmed order.

    Every run writes its own script with a run id of its own, so no Idempotency-Key is ever
    sent twice (a replay would be answered from the store and flatter the figures).
    """
    script = suite.work / f"orders-{connections}-{time.monotonic_ns()}.lua"
    script.write_text(LUA % {**load, "run": f"{os.getpid()}-{time.monotonic_ns()}"})
    confirmed = "SELECT count(*) FROM customer_order WHERE status = 'confirmed'"
    before = int(suite.psql("orders", confirmed))
    commits_before = suite.commits()
    backends = [] if suite.infra.private else suite.backends()
    suite.reset_statements()
    loader_before = os.times()
    cpu_before = _cpu(suite, cpu_ticks())
    backends_before = process_ticks(backends)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
         suite.url("gateway")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    loader_after = os.times()
    time.sleep(SETTLE_SECONDS)
    cpu_after = _cpu(suite, cpu_ticks())
    if not suite.infra.private:  # the run's backends of the machine's PostgreSQL
        listed = set(suite.backends())
        backends_after = process_ticks(sorted(set(backends) | listed))
        cpu_before["postgres"] = 0
        cpu_after["postgres"], ended = backend_ticks(backends_before, backends_after, listed)
        if ended:
            print(
                f"  ({connections} connections) {ended} PostgreSQL backend(s) ended within the"
                " window: their CPU is missing from postgres's figure"
            )
    queries = suite.statements()
    time.sleep(STATS_SECONDS - SETTLE_SECONDS)
    commits_after = suite.commits()
    after = int(suite.psql("orders", confirmed))
    orders = max(after - before, 1)
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    cpu_ms = {k: (cpu_after[k] - cpu_before[k]) * tick_ms / orders for k in cpu_after}
    cpu_ms["wrk (load)"] = (
        (
            (loader_after.children_user + loader_after.children_system)
            - (loader_before.children_user + loader_before.children_system)
        )
        * 1000
        / orders
    )
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    non2xx_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = {m[1]: float(m[2]) * _UNITS[m[3]] for m in _LATENCY.finditer(out)}
    for line in sorted(set(re.findall(r"^non-2xx: .*$", out, re.M)))[:3]:
        print(f"  ({connections} connections) {line[:300]}")
    statements = {s: sum(c for db, c, _ in queries if db == s) / orders for s in SERVICES}
    return Run(
        connections,
        {
            "requests/s": rps,
            "confirmed/s": (after - before) / seconds,
            "non-2xx": int(non2xx_match[1]) if non2xx_match else 0,
            "requests": total,
            "p50 ms": lat.get("50", 0.0),
            "p99 ms": lat.get("99", 0.0),
        },
        cpu_ms,
        {s: (commits_after[s] - commits_before[s]) / orders for s in SERVICES},
        statements,
        [(db, calls / orders, query) for db, calls, query in queries],
    )


def median_run(runs: list[Run]) -> Run:
    """The median of each figure over rounds at one connection count."""

    def med(values: list[dict[str, float]]) -> dict[str, float]:
        return {k: statistics.median(v.get(k, 0.0) for v in values) for k in values[0]}

    return Run(
        runs[0].connections,
        med([r.figures for r in runs]),
        med([r.cpu_ms for r in runs]),
        med([r.commits for r in runs]),
        med([r.statements for r in runs]),
        runs[len(runs) // 2].queries,
    )


def print_tables(rows: list[Run], *, seconds: int, rounds: int, private: bool) -> None:
    """The rates, the CPU per order per process, the commits and statements per order."""
    print(f"\nOrders through the gateway ({seconds} s per run, median of {rounds} round(s))")
    print(f"{'connections':>11} {'answers/s':>9} {'confirmed/s':>11} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'non-2xx':>8}")  # fmt: skip
    for run in rows:
        f = run.figures
        print(
            f"{run.connections:>11} {f['requests/s']:>9.0f} {f['confirmed/s']:>11.0f} "
            f"{f['p50 ms']:>8.1f} {f['p99 ms']:>8.1f} {f['non-2xx']:>8.0f}"
        )
    head = "".join(f"{f'{r.connections} conns':>10}" for r in rows)
    print(
        f"\nCPU ms per confirmed order{'' if private else ' (local: postgres = backends only; rabbitmq, redis shared)'}"
    )
    print(f"{'process':>14}{head}")
    for name in GROUPS:
        print(f"{name:>14}" + "".join(f"{r.cpu_ms.get(name, 0.0):>10.2f}" for r in rows))
    print(
        f"{'total':>14}"
        + "".join(f"{sum(r.cpu_ms.get(n, 0.0) for n in GROUPS):>10.2f}" for r in rows)
    )
    print(f"{'wrk (load)':>14}" + "".join(f"{r.cpu_ms['wrk (load)']:>10.2f}" for r in rows))
    print("\nCommits per confirmed order (pg_stat_database xact_commit)"
          + ("" if private else "; statements: --infra private only"))  # fmt: skip
    print(f"{'database':>14}{head}")
    for name in SERVICES:
        print(f"{name:>14}" + "".join(f"{r.commits[name]:>10.2f}" for r in rows))
    print(f"{'total':>14}" + "".join(f"{sum(r.commits.values()):>10.2f}" for r in rows))
    if private:
        print("\nStatements per confirmed order (pg_stat_statements calls, BEGIN/COMMIT included)")
        print(f"{'database':>14}{head}")
        for name in SERVICES:
            print(f"{name:>14}" + "".join(f"{r.statements[name]:>10.2f}" for r in rows))
        print(f"{'total':>14}" + "".join(f"{sum(r.statements.values()):>10.2f}" for r in rows))


def print_statements(run: Run) -> None:
    """The statements behind the counts of one run, most frequent first, per database."""
    print(f"\nStatements per confirmed order at {run.connections} connections")
    for service in SERVICES:
        mine = sorted((q for q in run.queries if q[0] == service), key=lambda q: -q[1])
        for _, per_order, query in mine:
            if per_order >= 0.005:
                print(f"  {service:<8}{per_order:>7.3f}  {query[:110]}")


def pgbench(url: str, seconds: int) -> dict[str, float]:
    """pgbench TPS on the same server: simple-update (-N) and TPC-B-like, 8 clients."""
    name = f"bazaar_bench_pgbench_{os.getpid()}"
    psql(url + "/postgres", f"CREATE DATABASE {name}")
    try:
        subprocess.run(["pgbench", "-i", "-q", "-s", "10", f"{url}/{name}"], check=True,
                       capture_output=True)  # fmt: skip
        results = {}
        for label, flags in (("simple-update", ["-N"]), ("TPC-B-like", [])):
            out = subprocess.run(
                ["pgbench", "-c", "8", "-j", "2", "-T", str(seconds), *flags, f"{url}/{name}"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            results[label] = float(re.search(r"tps = ([\d.]+)", out)[1])  # type: ignore[index]
        return results
    finally:
        subprocess.run(["psql", url + "/postgres", "-qc", f"DROP DATABASE {name} WITH (FORCE)"],
                       capture_output=True, check=False)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15, help="length of each wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--rounds", type=int, default=1, help="sweeps; medians are printed")
    parser.add_argument("--infra", choices=("private", "local"), default="private")
    parser.add_argument("--statements", action="store_true", help="list the statements too")
    parser.add_argument("--src", type=Path, help="run the programs from this checkout's sources")
    parser.add_argument("--json", type=Path, help="also write the medians here")
    parser.add_argument("--skip-pgbench", action="store_true")
    args = parser.parse_args()
    ensure_tools()
    # A SIGTERM unwinds like Ctrl-C (SIGINT): the `finally` blocks stop and remove everything.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    work = Path(tempfile.mkdtemp(prefix="bazaar-bench-orders-"))
    try:
        work.chmod(0o755)  # the private servers run as postgres and rabbitmq
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_run(round_: int, run: Run) -> None:
    """One run's headline figures as it ends: how far rounds spread shows here."""
    figures = run.figures
    print(
        f"round {round_}, {run.connections} connections: {figures['confirmed/s']:.0f} confirmed/s,"
        f" p50 {figures['p50 ms']:.1f} / p99 {figures['p99 ms']:.1f} ms,"
        f" {sum(run.cpu_ms.get(name, 0.0) for name in GROUPS):.2f} ms CPU per order",
        flush=True,
    )


def run(args: argparse.Namespace, work: Path) -> None:
    """Start the infrastructure and the suite in `work`, measure, stop them all, print."""
    infra = Infra("", "", "", private=True)
    suite: Suite | None = None
    tps: dict[str, float] = {}
    try:
        infra = private_infra(work, str(os.getpid())) if args.infra == "private" else local_infra()
        suite = Suite(work, infra, args.src)
        suite.start()
        products, token = seed(suite)
        load = {"products": ", ".join(f'"{p}"' for p in products), "token": token}
        wrk(suite, load, 8, 3)  # warm-up: pools, caches, the JIT-less interpreter's caches
        sweeps: list[list[Run]] = []
        for round_ in range(1, args.rounds + 1):
            sweeps.append([])
            for connections in args.connections:
                sweeps[-1].append(wrk(suite, load, connections, args.seconds))
                print_run(round_, sweeps[-1][-1])  # the spread the medians hide
        rows = [median_run([sweep[i] for sweep in sweeps]) for i in range(len(args.connections))]
        reservations = suite.psql("catalog", "SELECT count(*) FROM reservation")
        orders = suite.psql("orders", "SELECT count(*) FROM customer_order")
        confirmed = suite.psql(
            "orders", "SELECT count(*) FROM customer_order WHERE status = 'confirmed'"
        )
        suite.stop()
        if not args.skip_pgbench:
            tps = pgbench(infra.pg, max(5, args.seconds // 2))
    finally:
        # A second Ctrl-C (or a SIGTERM) would cut the clean-up short, leaving servers running.
        handlers = {
            sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            if suite is not None:
                suite.stop()
        finally:
            infra.stop()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    print_tables(rows, seconds=args.seconds, rounds=args.rounds, private=infra.private)
    print(
        f"stored: {orders} orders, {confirmed} confirmed; catalog holds {reservations} reservations"
    )
    if args.statements:
        print_statements(rows[len(rows) // 2])
    if tps:
        print(
            "pgbench on the same server (8 clients): "
            + ", ".join(f"{k} {v:.0f} TPS" for k, v in tps.items())
        )
    if args.json is not None:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1))


if __name__ == "__main__":
    main()
