"""How fast orders' reconciler drains a backlog of pending orders once catalog is back.

    uv run python bench/reconciler.py        # ~1 minute; --orders 2000 --rounds 3 --concurrency 16

What runs: auth, catalog and orders as real processes (their `serve` commands, default
settings but the ones named here), each on a fresh database of the local PostgreSQL; no
broker (the outbox rows simply wait). Each round writes N pending orders straight into
orders' database (one unit each of a few products with ample stock), as a catalog outage
leaves them, not yet due; then makes them all due at once and waits until none is pending.
Orders' reconciler (every `ORDERS_RECONCILE_INTERVAL_SECONDS`, default 1 s) asks the real
catalog for each with its `order-<id>` key and confirms it.

Printed per concurrency: orders/s of each round from the first to the last order settled
(as stored), the median, the wall time from "all due" to none pending, how busy the whole
machine was (200 % = both cores), and the CPU time each side spent per order (orders,
catalog, and the PostgreSQL backends serving each one's database), which tells where the
time goes whatever else the machine runs. The machine is shared: read the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from orders import (  # a sibling script
    BIN,
    PG,
    ROOT,
    admin_headers,
    create_products,
    free_port,
    wait_ready,
)

SERVICES = ("auth", "catalog", "orders")

SEED_PENDING = """
INSERT INTO customer_order (id, customer_id, status, lines, next_attempt_at, created_at,
                            updated_at)
SELECT gen_random_uuid(), 'bench-customer', 'pending',
       jsonb_build_array(jsonb_build_object(
           'product_id', ($1::text[])[1 + n % array_length($1::text[], 1)], 'quantity', 1,
           'sku', NULL, 'name', NULL, 'unit_price_cents', NULL)),
       'infinity', now() - interval '10 minutes' + n * interval '1 ms', now()
FROM generate_series(1, $2) AS n
"""
MAKE_DUE = "UPDATE customer_order SET next_attempt_at = now() WHERE status = 'pending'"
PENDING = "SELECT count(*) FROM customer_order WHERE status = 'pending'"
SETTLED_SPAN = """
SELECT count(*), extract(epoch FROM max(updated_at) - min(updated_at))
FROM customer_order WHERE updated_at >= $1 AND status <> 'pending'
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def backend_cpu(
    conn: asyncpg.Connection, databases: list[str]
) -> dict[int, tuple[str, float]]:
    """(database, CPU seconds so far) of every PostgreSQL backend serving these databases."""
    rows = await conn.fetch(
        "SELECT pid, datname FROM pg_stat_activity WHERE datname = ANY($1::text[])", databases
    )
    found = {}
    for row in rows:
        try:
            found[row["pid"]] = (row["datname"], cpu_seconds(row["pid"]))
        except (FileNotFoundError, ProcessLookupError):
            pass  # ended meanwhile
    return found


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, every core."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class Services:
    """Auth, catalog and orders on fresh databases; orders restarted per concurrency."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.tag = f"{os.getpid()}"
        self.ports = {name: free_port() for name in SERVICES}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, name: str) -> str:
        """Base URL of a process."""
        return f"http://127.0.0.1:{self.ports[name]}"

    def database(self, name: str) -> str:
        """The database URL of a service."""
        return f"{PG}/bazaar_bench_rec_{name}_{self.tag}"

    def env(self, name: str, **extra: str) -> dict[str, str]:
        """The environment of one process: port, database, peers; no broker."""
        prefix = name.upper() + "_"
        env = {
            f"{prefix}PORT": str(self.ports[name]),
            f"{prefix}LOG_LEVEL": "WARNING",
            f"{prefix}JWT_JWKS_URL": f"{self.url('auth')}/.well-known/jwks.json",
            f"{prefix}DATABASE_URL": self.database(name),
        }
        if name == "orders":
            env["ORDERS_CATALOG_URL"] = self.url("catalog")
            env["ORDERS_AUTH_URL"] = self.url("auth")
        return {**os.environ, **env, **extra}

    def start(self, name: str, **extra: str) -> None:
        """Start one service (created and migrated first) and wait until it is ready."""
        for command in ("create-db", "migrate"):
            subprocess.run(
                [str(BIN / f"bazaar-{name}"), command],
                env=self.env(name),
                check=True,
                capture_output=True,
            )
        log = (self.work / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [str(BIN / f"bazaar-{name}"), "serve"],
            env=self.env(name, **extra),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_ready(self.url(name) + "/readyz", self.procs[name], name)

    def stop(self, name: str) -> None:
        """Stop one service."""
        proc = self.procs.pop(name)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()

    def stop_all(self) -> None:
        """Stop every process and drop the databases."""
        for name in list(self.procs):
            self.stop(name)
        for name in SERVICES:
            subprocess.run(
                [
                    "psql",
                    PG + "/postgres",
                    "-qc",
                    f"DROP DATABASE IF EXISTS bazaar_bench_rec_{name}_{self.tag} WITH (FORCE)",
                ],
                capture_output=True,
                check=False,
            )


def products(services: Services, count: int) -> list[str]:
    """Products with ample stock, created in catalog by the development admin."""
    admin = admin_headers(services.env("auth"), services.url("auth") + "/v1/auth/token")
    return create_products(
        services.url("catalog") + "/v1/products",
        admin,
        count,
        sku="REC",
        name="Reconciler bench product",
    )


def profile(services: Services) -> list[subprocess.Popen[bytes]]:
    """py-spy (run by uv, not a dependency) sampling orders and catalog; SIGINT to stop."""
    uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    return [
        subprocess.Popen(
            [
                uv,
                "tool",
                "run",
                "py-spy",
                "record",
                "--format",
                "raw",
                "--rate",
                "200",
                "-o",
                str(services.work / f"{name}.folded"),
                "-p",
                str(services.procs[name].pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in ("orders", "catalog")
    ]


async def drain(
    services: Services, product_ids: list[str], orders: int, *, profiled: bool = False
) -> dict[str, float]:
    """Seed `orders` pending orders, make them due, wait until none is pending."""
    conn = await asyncpg.connect(services.database("orders"))
    try:
        await conn.execute(SEED_PENDING, product_ids, orders)
        pids = {name: proc.pid for name, proc in services.procs.items()}
        databases = [services.database(name).rsplit("/", 1)[1] for name in pids]
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        pg_before = await backend_cpu(conn, databases)
        busy_before = machine_busy()
        spies = profile(services) if profiled else []
        await asyncio.sleep(2 if spies else 0)  # py-spy attaches
        due_at = await conn.fetchval("SELECT now()")
        started = time.monotonic()
        await conn.execute(MAKE_DUE)
        while await conn.fetchval(PENDING):
            if time.monotonic() - started > 600:
                raise SystemExit("the backlog did not drain within 10 minutes")
            await asyncio.sleep(0.05)
        wall = time.monotonic() - started
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        pg_after = await backend_cpu(conn, databases)
        for name in pids:
            database = services.database(name).rsplit("/", 1)[1]
            cpu[f"pg {name}"] = sum(
                t - pg_before.get(pid, (database, 0.0))[1]
                for pid, (db, t) in pg_after.items()
                if db == database
            )
        busy_after = machine_busy()
        settled, span = await conn.fetchrow(SETTLED_SPAN, due_at)
    finally:
        await conn.close()
    busy = (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1])
    return {
        "settled": float(settled),
        "rate": (settled - 1) / float(span) if span else 0.0,
        "wall": wall,
        "machine": busy * 100 * os.cpu_count(),  # type: ignore[operator]
        **{f"ms {name}": 1000 * seconds / max(1, settled) for name, seconds in cpu.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=2000, help="pending orders per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--products", type=int, default=20, help="products the orders spread over")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[16], help="ORDERS_RECONCILE_CONCURRENCY"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy orders and catalog during the last round (folded stacks in the work dir)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bazaar-bench-reconciler-"))
    services = Services(work)
    results: list[tuple[int, list[dict[str, float]]]] = []
    try:
        services.start("auth")
        services.start("catalog")
        product_ids = products(services, args.products)
        for concurrency in args.concurrency:
            services.start("orders", ORDERS_RECONCILE_CONCURRENCY=str(concurrency))
            asyncio.run(drain(services, product_ids, 200))  # warm-up: pools, token, caches
            rounds = [
                asyncio.run(
                    drain(
                        services,
                        product_ids,
                        args.orders,
                        profiled=args.profile and i == args.rounds - 1,
                    )
                )
                for i in range(args.rounds)
            ]
            results.append((concurrency, rounds))
            services.stop("orders")
    finally:
        services.stop_all()
    load = os.getloadavg()
    print(f"\nReconciler drain of {args.orders} pending orders (work dir {work})")
    print(f"load average now {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {os.cpu_count()} cores")
    print(
        f"{'concurrency':>11} {'orders/s per round':>20} {'median':>7} {'wall s':>7} "
        f"{'machine %':>9}   CPU ms per order: {'orders':>6} {'catalog':>7} "
        f"{'pg orders':>9} {'pg catalog':>10}"
    )
    for concurrency, rounds in results:
        rates = " ".join(f"{r['rate']:.0f}" for r in rounds)
        median = statistics.median(r["rate"] for r in rounds)
        mid = sorted(rounds, key=lambda r: r["rate"])[len(rounds) // 2]
        print(
            f"{concurrency:>11} {rates:>20} {median:>7.0f} {mid['wall']:>7.1f} "
            f"{mid['machine']:>9.0f}   {'':>17} {mid['ms orders']:>6.2f} "
            f"{mid['ms catalog']:>7.2f} {mid['ms pg orders']:>9.2f} {mid['ms pg catalog']:>10.2f}"
        )
    unsettled = [r for _, rounds in results for r in rounds if r["settled"] < args.orders]
    if unsettled:
        print(f"WARNING: {len(unsettled)} round(s) settled fewer orders than seeded")


if __name__ == "__main__":
    main()
