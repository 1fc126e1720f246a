"""Order status streams at scale: memory per open stream and event latency, one orders process.

    uv run python bench/order_streams.py           # about a minute; prints the figures
    uv run python bench/order_streams.py --streams 1000 --changes 2000 --rate 200 --json out.json

What runs: orders alone, as a real process (its `serve` command, default settings: a pool of
10 database connections, keep-alive comments every 10 s), on a fresh database prepared with
create-db and migrate as `make up` does; no broker, no catalog (nothing here needs them).
PostgreSQL is the bench's own by default (`--infra private`: a throwaway cluster with the
machine's durability, as bench/orders.py starts it) or the machine's (`--infra local`, a
database named for the run, dropped at the end). The bench process serves the JWKS its
customers' tokens are signed with, writes the orders straight into orders' database (one
confirmed order per stream, 50 customers) and holds every stream (aiohttp, one asyncio loop
on uvloop, parsing each event as a client would).

Steps, and what is printed:

1. warm-up: 50 streams opened and dropped, so the pool has grown to its size and the code
   paths are loaded before memory is read;
2. `--streams` streams opened (each its own connection and order), each waited for until
   its first event; the orders process's resident memory (VmRSS) before and after, divided
   by the streams: **memory per stream**; the orders database's connections while they
   wait (pool + the one LISTEN connection, whatever the number of streams); the process's
   CPU while they sit idle (keep-alives only);
3. **steady changes**: `--changes` orders changed one after another at `--rate` per second,
   each its own commit (`UPDATE ... SET updated_at = now()`, a change every stream shows);
   latency from just before the statement is sent (so it includes the commit) to the
   client's receipt of that order's event: p50 / p99 / max; orders' CPU per event;
4. **burst**: every order changed by one statement (one commit, `--streams` notices at once):
   the same latencies, from before that statement.

The client's own loop is in the latencies: at a burst it parses every event in one process.
The machine is shared (2 cores): read the figures with the load average printed beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import uvloop
from aiohttp import web

from bazaar.shared.testing.tokens import JWKS_PATH, TokenIssuer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from orders import BIN, PG, ROOT, DurablePostgres, free_port  # a sibling script

CUSTOMERS = 50
WARM_UP_STREAMS = 50

SEED = """
INSERT INTO customer_order (id, customer_id, status, lines, total_cents, currency,
                            reservation_id, created_at, updated_at)
SELECT id, 'bench-customer-' || (n % $2), 'confirmed',
       jsonb_build_array(jsonb_build_object('product_id', gen_random_uuid(), 'quantity', 1,
           'sku', 'BENCH-1', 'name', 'Bench product', 'unit_price_cents', 1000)),
       1000, 'EUR', gen_random_uuid(), now(), now()
FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, n)
"""
TOUCH = "UPDATE customer_order SET updated_at = now() WHERE id = $1"
TOUCH_ALL = "UPDATE customer_order SET updated_at = now()"


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    """The value at `share` (0-1) of the sorted values (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def summary_ms(values: list[float]) -> dict[str, float]:
    """p50, p99 and max of latencies in seconds, as milliseconds."""
    return {
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


@dataclass
class Streams:
    """The open streams: the latest event of each order, and the changes awaited."""

    session: aiohttp.ClientSession
    base: str
    tokens: dict[str, str]
    #: order id -> time just before the change it awaits was sent.
    awaited: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    first: dict[str, asyncio.Event] = field(default_factory=dict)
    events: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    all_seen: asyncio.Event = field(default_factory=asyncio.Event)

    async def follow(self, order_id: str, customer: str) -> None:
        """Read one stream until cancelled, noting when each event arrives."""
        headers = {"Authorization": f"Bearer {self.tokens[customer]}"}
        url = f"{self.base}/v1/orders/{order_id}/events"
        async with self.session.get(url, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"{url}: {response.status} {await response.text()}")
            data = b""
            async for line in response.content:
                if line.startswith(b"data:"):
                    data = line[5:]
                elif line in (b"\n", b"\r\n") and data:
                    arrived = time.perf_counter()
                    order = json.loads(data)
                    data = b""
                    self.events += 1
                    self.first[order["id"]].set()
                    sent = self.awaited.pop(order["id"], None)
                    if sent is not None:
                        self.latencies.append(arrived - sent)
                        if not self.awaited:
                            self.all_seen.set()

    async def open(self, orders: list[tuple[str, str]]) -> None:
        """Open a stream per order; return once every one has had its first event."""
        for order_id, customer in orders:
            self.first[order_id] = asyncio.Event()
            self.tasks.append(asyncio.create_task(self.follow(order_id, customer)))
        async with asyncio.timeout(120):
            for order_id, _ in orders:
                await self.first[order_id].wait()
        for task in self.tasks:
            if task.done():
                task.result()

    async def close(self) -> None:
        """Drop every stream."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()


async def serve_jwks(issuer: TokenIssuer, port: int) -> web.AppRunner:
    """The issuer's JWKS on 127.0.0.1:`port`."""

    async def jwks(_request: web.Request) -> web.Response:
        return web.json_response(issuer.jwks())

    app = web.Application()
    app.router.add_get(JWKS_PATH, jwks)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def orders_env(database_url: str, port: int, jwks_url: str) -> dict[str, str]:
    """The orders process's environment: its database, port and token issuer."""
    return {
        **os.environ,
        "ORDERS_DATABASE_URL": database_url,
        "ORDERS_PORT": str(port),
        "ORDERS_LOG_LEVEL": "WARNING",
        "ORDERS_JWT_JWKS_URL": jwks_url,
        "ORDERS_JWT_ISSUER": TokenIssuer.ISSUER,
        "ORDERS_JWT_AUDIENCE": TokenIssuer.AUDIENCE,
    }


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll until the URL answers 200; stop if the process died."""
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"orders exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except Exception:
            time.sleep(0.1)
    sys.exit(f"orders did not become ready at {url}")


async def headers_without_event_ms(streams: Streams, order_id: str, customer: str) -> float:
    """How long the answer's headers take when the client has seen the latest state (so no
    event comes with them): they must not wait for the next change or keep-alive."""
    headers = {"Authorization": f"Bearer {streams.tokens[customer]}"}
    url = f"{streams.base}/v1/orders/{order_id}/events"
    version = ""
    async with streams.session.get(url, headers=headers) as response:
        async for line in response.content:
            if line.startswith(b"id:"):
                version = line[3:].strip().decode()
                break
    started = time.perf_counter()
    async with streams.session.get(url, headers={**headers, "Last-Event-ID": version}) as response:
        assert response.status == 200, response.status
        return (time.perf_counter() - started) * 1000


@dataclass
class Run:
    """What the bench set up: orders' process and port, its database, the token issuer."""

    proc: subprocess.Popen[bytes]
    port: int
    jwks_port: int
    database_url: str
    issuer: TokenIssuer


async def measure(args: argparse.Namespace, run: Run) -> dict[str, Any]:
    """Seed, open the streams, change orders; the figures."""
    runner = await serve_jwks(run.issuer, run.jwks_port)
    proc, database_url, issuer = run.proc, run.database_url, run.issuer
    db = await asyncpg.connect(database_url)
    order_ids = [str(uuid.uuid4()) for _ in range(args.streams + WARM_UP_STREAMS)]
    await db.execute(SEED, [uuid.UUID(o) for o in order_ids], CUSTOMERS)
    customer_of = {o: f"bench-customer-{(n + 1) % CUSTOMERS}" for n, o in enumerate(order_ids)}
    tokens = {
        f"bench-customer-{n}": issuer.issue(f"bench-customer-{n}", ["orders:read"], expires_in=3600)
        for n in range(CUSTOMERS)
    }
    figures: dict[str, Any] = {"streams": args.streams}
    try:
        base = f"http://127.0.0.1:{run.port}"
        await asyncio.to_thread(wait_ready, f"{base}/readyz", proc)
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            warm = Streams(session, base, tokens)
            await warm.open([(o, customer_of[o]) for o in order_ids[-WARM_UP_STREAMS:]])
            await warm.close()
            await asyncio.sleep(1.0)
            before = rss_bytes(proc.pid)

            streams = Streams(session, base, tokens)
            watched = [(o, customer_of[o]) for o in order_ids[: args.streams]]
            opened_at = time.perf_counter()
            await streams.open(watched)
            figures["open_all_seconds"] = round(time.perf_counter() - opened_at, 2)
            await asyncio.sleep(2.0)
            after = rss_bytes(proc.pid)
            figures["rss_before_mib"] = round(before / 2**20, 1)
            figures["rss_after_mib"] = round(after / 2**20, 1)
            figures["kib_per_stream"] = round((after - before) / args.streams / 1024, 1)
            figures["db_connections_while_waiting"] = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                database_url.rsplit("/", 1)[1],
            )
            idle_from = cpu_seconds(proc.pid)
            await asyncio.sleep(args.idle_seconds)
            figures["idle_cpu_percent"] = round(
                (cpu_seconds(proc.pid) - idle_from) / args.idle_seconds * 100, 1
            )
            figures["headers_with_nothing_to_send_ms"] = round(
                await headers_without_event_ms(streams, *watched[0]), 1
            )

            # Steady: one change per commit at the rate asked.
            cpu_from, events_from = cpu_seconds(proc.pid), streams.events
            pause = 1.0 / args.rate
            next_at = time.perf_counter()
            streams.all_seen.clear()
            for n in range(args.changes):
                order_id = watched[n % len(watched)][0]
                next_at += pause
                # An order whose last change is still on its way keeps that one's time.
                streams.awaited.setdefault(order_id, time.perf_counter())
                await db.execute(TOUCH, uuid.UUID(order_id))
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            async with asyncio.timeout(30):
                await streams.all_seen.wait()
            steady = list(streams.latencies)
            figures["steady"] = {
                "changes": args.changes,
                "rate_per_second": args.rate,
                **summary_ms(steady),
                "orders_cpu_ms_per_event": round(
                    (cpu_seconds(proc.pid) - cpu_from) * 1000 / (streams.events - events_from), 3
                ),
            }

            # Burst: every watched order in one commit.
            streams.latencies.clear()
            streams.all_seen.clear()
            cpu_from, events_from = cpu_seconds(proc.pid), streams.events
            sent = time.perf_counter()
            for order_id, _ in watched:
                streams.awaited[order_id] = sent
            await db.execute(TOUCH_ALL)
            async with asyncio.timeout(60):
                await streams.all_seen.wait()
            figures["burst"] = {
                "changes": len(watched),
                **summary_ms(streams.latencies),
                "orders_cpu_ms_per_event": round(
                    (cpu_seconds(proc.pid) - cpu_from) * 1000 / (streams.events - events_from), 3
                ),
            }
            await streams.close()
    finally:
        await db.close()
        await runner.cleanup()
    figures["load_average"] = os.getloadavg()
    return figures


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    """Start the infrastructure and orders, measure, stop and clean up."""
    name = f"bazaar_bench_streams_{os.getpid()}"
    postgres = None
    if args.infra == "private":
        postgres = DurablePostgres(args.work)
        postgres.start()
        server = postgres.url
    else:
        server = PG
    database_url = f"{server}/{name}"
    issuer, port, jwks_port = TokenIssuer(), free_port(), free_port()
    try:
        subprocess.run(
            [str(BIN / "python"), str(ROOT / "scripts" / "prepare_service.py"), "orders",
             "create-db", "migrate"],
            env={**os.environ, "ORDERS_DATABASE_URL": database_url},
            check=True, capture_output=True,
        )  # fmt: skip
        jwks_url = f"http://127.0.0.1:{jwks_port}{JWKS_PATH}"
        with (args.work / "orders.log").open("wb") as log:
            proc = subprocess.Popen(
                [str(BIN / "bazaar-orders"), "serve"],
                env=orders_env(database_url, port, jwks_url),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
            return uvloop.run(measure(args, Run(proc, port, jwks_port, database_url, issuer)))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if postgres is None:
                subprocess.run(
                    ["psql", f"{server}/postgres", "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
                    check=False, capture_output=True,
                )  # fmt: skip
    finally:
        if postgres is not None:
            postgres.stop()


def report(figures: dict[str, Any]) -> None:
    """Print the figures as a small table."""
    print(f"\n{figures['streams']} streams on one orders process "
          f"(load average {', '.join(f'{x:.2f}' for x in figures['load_average'])})")  # fmt: skip
    print(f"  opened (first event each) in        {figures['open_all_seconds']} s")
    print(f"  RSS before / after                  {figures['rss_before_mib']} / "
          f"{figures['rss_after_mib']} MiB")  # fmt: skip
    print(f"  memory per stream                   {figures['kib_per_stream']} KiB")
    print(f"  database connections while waiting  {figures['db_connections_while_waiting']}")
    print(f"  CPU while idle (keep-alives only)   {figures['idle_cpu_percent']} %")
    print(f"  headers, nothing to send yet        {figures['headers_with_nothing_to_send_ms']} ms")
    for phase in ("steady", "burst"):
        f = figures[phase]
        label = f"{phase} ({f['changes']} changes" + (
            f", {f['rate_per_second']}/s)" if phase == "steady" else ", one commit)"
        )
        print(f"  {label:<36}p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms, max {f['max_ms']} ms;"
              f" orders CPU {f['orders_cpu_ms_per_event']} ms/event")  # fmt: skip


def main() -> None:
    """Parse the arguments, run once, print (and keep) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=2000, help="steady changes")
    parser.add_argument("--rate", type=float, default=200.0, help="steady changes per second")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--infra", choices=("private", "local"), default="private")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bazaar-bench-streams-"))
    work.chmod(0o755)  # the private PostgreSQL runs as postgres
    args.work = work
    try:
        figures = run_once(args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(figures)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
