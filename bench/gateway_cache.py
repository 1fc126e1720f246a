"""Gateway response cache benchmark: CPU per cached hit against a proxied miss, and a
read-mostly catalog workload with the cache on and off.

    uv run python bench/gateway_cache.py [--rounds 3] [--seconds 8] [--connections 32]
                                         [--products 1000]

Starts the real catalog (its own `serve`, a fresh database created, migrated and filled
with `--products` products, dropped at the end) on core 0 beside wrk, and three gateways
(`bazaar-gateway serve`) on core 1, one at a time under load: the cache off
(GATEWAY_CACHE_ENABLED=false), the cache in-process, and the cache in Redis
($BAZAAR_TEST_REDIS_URL, else 127.0.0.1:6379, keys under a prefix of the run's own,
deleted after). The cached gateways subscribe to catalog events on the local broker
($BAZAAR_TEST_AMQP_URL, else 127.0.0.1:5672, a vhost of the run's own, deleted after), as
a deployment does, so their entries are served for catalog's whole `s-maxage` (30 s), not
1 s. Rate limiting is off in all three: the figures are the cache's alone.

Two workloads, each run after a 2 s warm-up, configurations alternating over the rounds,
medians printed:
- one product: every request `GET /v1/products/<id>` of one product, so with the cache on
  all are hits; with it off all are forwarded. Prints the gateway's and catalog's CPU µs
  per request (utime + stime from /proc over the run, divided by the requests wrk counted).
- many products: each request a product drawn at random from all of them (wrk Lua), the
  hit ratio read from the gateway's `gateway_cache_requests_total`.
Sends traffic to 127.0.0.1 only. Redis's, PostgreSQL's and RabbitMQ's own CPU is not
counted (they serve the whole machine). Needs Debian's wrk (installed when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway import (  # a sibling script: the same process and /proc helpers
    BIN,
    LOAD_CPU,
    PROXY_CPU,
    cpu_seconds,
    ensure_tools,
    start,
    stop_all,
    wait_http,
)

from bazaar.shared.testing.postgres import LOCAL_POSTGRES, with_database
from bazaar.shared.testing.server import free_port

WARM_UP_SECONDS = 2.0
_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_RESULT = re.compile(r'^gateway_cache_requests_total\{result="(\w+)"\} (\S+)$', re.M)


@dataclass
class Run:
    """One wrk run through one gateway."""

    rps: float
    p50_ms: float
    p99_ms: float
    gateway_us: float  # gateway CPU per request
    catalog_us: float  # catalog CPU per request
    hit_ratio: float | None


def results(gateway: str) -> dict[str, float]:
    """The gateway's cache results so far (empty when the cache is off)."""
    with urllib.request.urlopen(f"{gateway}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {m[1]: float(m[2]) for m in _RESULT.finditer(text)}


def measure(
    gateway: str, script: Path, seconds: float, connections: int, pids: tuple[int, int]
) -> Run:
    """wrk on the load core through `gateway` with the request script; CPU of both pids."""
    before = results(gateway)
    cpu_before = [cpu_seconds(pid) for pid in pids]
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}"]
    cmd += [f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script), gateway]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cpu_after = [cpu_seconds(pid) for pid in pids]
    after = results(gateway)
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        sys.exit(f"{gateway}: non-2xx answers; the benchmark setup is wrong:\n{out}")
    lat = {m[1]: float(m[2]) * _UNITS[m[3]] for m in _LATENCY.finditer(out)}
    counted = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    served = sum(counted.values())
    return Run(
        float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),  # type: ignore[index]
        lat.get("50", 0.0),
        lat.get("99", 0.0),
        (cpu_after[0] - cpu_before[0]) * 1e6 / total,
        (cpu_after[1] - cpu_before[1]) * 1e6 / total,
        counted.get("hit", 0.0) / served if served else None,
    )


def script_for(ids: list[str], work: Path, name: str) -> Path:
    """A wrk script asking for one of `ids` at random per request."""
    path = work / f"{name}.lua"
    listed = ",".join(f'"{i}"' for i in ids)
    path.write_text(
        f"local ids = {{{listed}}}\n"
        "request = function()\n"
        '  return wrk.format("GET", "/v1/products/" .. ids[math.random(#ids)])\n'
        "end\n"
    )
    return path


async def fill(database: str, count: int) -> list[str]:
    """Insert `count` products (as catalog's tests do); return their ids."""
    import asyncpg

    ids = [uuid.uuid4() for _ in range(count)]
    connection = await asyncpg.connect(database)
    try:
        await connection.executemany(
            "INSERT INTO product (id, sku, name, description, price_cents, currency, stock)"
            " VALUES ($1, $2, $3, $4, $5, 'EUR', 100)",
            [
                (pid, f"BENCH-{n:05d}", f"Bench product {n}", "A product to read.", 100 + n)
                for n, pid in enumerate(ids)
            ],
        )
    finally:
        await connection.close()
    return [str(i) for i in ids]


def rabbitmqctl(*args: str, check: bool = True) -> None:
    """Run rabbitmqctl (vhosts of the run's own: added, then deleted)."""
    subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=120, check=check)


def broker_vhost() -> tuple[str, str | None]:
    """A vhost of the run's own on the local broker (URL, vhost to delete), else the URL given."""
    from bazaar.shared.testing.amqp import LOCAL_AMQP, with_vhost

    given = os.environ.get("BAZAAR_TEST_AMQP_URL")
    if given:
        return given, None
    vhost = f"bazaar-bench-cache-{os.getpid()}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    return with_vhost(LOCAL_AMQP, vhost), vhost


def gateway_env(port: int, catalog: str, **cache: str) -> dict[str, str]:
    """A gateway in front of catalog only, no rate limits, the cache as given."""
    return {
        "GATEWAY_PORT": str(port),
        "GATEWAY_ENVIRONMENT": "test",
        "GATEWAY_UPSTREAMS": f'{{"catalog": {{"url": "{catalog}"}}}}',
        "GATEWAY_RATE_LIMITING": "false",
        "GATEWAY_LOG_LEVEL": "WARNING",
        **cache,
    }


def wait_subscribed(gateway: str) -> None:
    """Wait until a cached gateway receives catalog events (its hits then last 30 s)."""
    for _ in range(300):
        with urllib.request.urlopen(f"{gateway}/metrics", timeout=5) as answer:
            if "gateway_cache_events_subscribed 1.0" in answer.read().decode():
                return
        time.sleep(0.1)
    sys.exit(f"{gateway} never subscribed to catalog events")


def median(runs: list[Run]) -> Run:
    """Per-field medians."""
    ratios = [r.hit_ratio for r in runs if r.hit_ratio is not None]
    return Run(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        statistics.median(r.gateway_us for r in runs),
        statistics.median(r.catalog_us for r in runs),
        statistics.median(ratios) if ratios else None,
    )


def table(title: str, rows: dict[str, Run]) -> None:
    """Print one workload's medians, with ratios to the cache-off gateway."""
    off = rows["cache off"]
    print(f"\n{title}")
    print(
        f"  {'gateway':<20}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'gw CPU µs':>11}"
        f"{'catalog CPU µs':>16}{'hits':>7}{'req/s vs off':>14}{'catalog CPU vs off':>20}"
    )
    for name, run in rows.items():
        hits = "-" if run.hit_ratio is None else f"{run.hit_ratio:.0%}"
        ratio = off.catalog_us / run.catalog_us if run.catalog_us > 0 else float("inf")
        catalog_ratio = f"{ratio:.1f}x" if ratio < 100 else ">100x"
        print(
            f"  {name:<20}{run.rps:>9.0f}{run.p50_ms:>8.2f}{run.p99_ms:>8.2f}"
            f"{run.gateway_us:>11.0f}{run.catalog_us:>16.0f}{hits:>7}"
            f"{run.rps / off.rps:>13.2f}x{catalog_ratio:>20}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--products", type=int, default=1000)
    args = parser.parse_args()
    ensure_tools()
    from bazaar.shared.testing.redis import LOCAL_REDIS, delete_prefixed

    server = os.environ.get("BAZAAR_TEST_DATABASE_URL", LOCAL_POSTGRES)
    name = f"bazaar_bench_cache_{os.getpid()}"
    database = with_database(server, name)
    redis_url = os.environ.get("BAZAAR_TEST_REDIS_URL", LOCAL_REDIS)
    prefix = f"bazaar-bench:{os.getpid()}:"
    amqp_url, vhost = broker_vhost()
    catalog_port = free_port()
    env = {
        "CATALOG_DATABASE_URL": database,
        "CATALOG_PORT": str(catalog_port),
        "CATALOG_ENVIRONMENT": "test",
        "CATALOG_LOG_LEVEL": "WARNING",
    }
    procs: list[subprocess.Popen[bytes]] = []
    work = Path(tempfile.mkdtemp(prefix="bazaar-bench-cache-"))
    load = os.getloadavg()
    try:
        for command in ("create-db", "migrate"):
            subprocess.run(
                [str(BIN / "bazaar-catalog"), command],
                env={**os.environ, **env},
                check=True,
                stdout=subprocess.DEVNULL,
            )
        ids = asyncio.run(fill(database, args.products))
        catalog = start([str(BIN / "bazaar-catalog"), "serve"], LOAD_CPU, env)
        procs.append(catalog)
        base = f"http://127.0.0.1:{catalog_port}"
        wait_http(f"{base}/readyz")
        configs = {
            "cache off": {"GATEWAY_CACHE_ENABLED": "false"},
            "cache in-process": {"GATEWAY_AMQP_URL": amqp_url},
            "cache in Redis": {
                "GATEWAY_AMQP_URL": amqp_url,
                "GATEWAY_REDIS_URL": redis_url,
                "GATEWAY_REDIS_PREFIX": f"{prefix}rl:",
                "GATEWAY_CACHE_REDIS_PREFIX": prefix,
            },
        }
        gateways: dict[str, tuple[str, int]] = {}
        for label, cache in configs.items():
            port = free_port()
            proc = start(
                [str(BIN / "bazaar-gateway"), "serve"], PROXY_CPU, gateway_env(port, base, **cache)
            )
            procs.append(proc)
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/v1/products/{ids[0]}")
            if "GATEWAY_AMQP_URL" in cache:
                wait_subscribed(url)
            gateways[label] = (url, proc.pid)
        workloads = {
            "one product": script_for(ids[:1], work, "one"),
            f"{len(ids)} products, random": script_for(ids, work, "many"),
        }
        runs: dict[str, dict[str, list[Run]]] = {w: {g: [] for g in gateways} for w in workloads}
        for _ in range(args.rounds):
            for workload, script in workloads.items():
                for label, (url, pid) in gateways.items():
                    measure(url, script, WARM_UP_SECONDS, args.connections, (pid, catalog.pid))
                    run = measure(url, script, args.seconds, args.connections, (pid, catalog.pid))
                    runs[workload][label].append(run)
        print(
            f"{os.cpu_count()} cores, shared with other work (load average before "
            f"{load[0]:.1f}, after {os.getloadavg()[0]:.1f}); wrk -t1 -c{args.connections} "
            f"keep-alive on core 0 with catalog, the gateway alone on core 1; "
            f"{args.seconds:.0f} s x {args.rounds} rounds, medians"
        )
        for workload in workloads:
            table(f"{workload}:", {g: median(r) for g, r in runs[workload].items()})
        one = {g: median(r) for g, r in runs["one product"].items()}
        off = one["cache off"].gateway_us
        for label in ("cache in-process", "cache in Redis"):
            print(
                f"\n  gateway CPU per cached hit ({label}): {one[label].gateway_us:.0f} µs, "
                f"per proxied miss (cache off): {off:.0f} µs: {off / one[label].gateway_us:.1f}x"
            )
    finally:
        stop_all(procs)
        asyncio.run(delete_prefixed(redis_url, prefix))
        if vhost is not None:
            rabbitmqctl("delete_vhost", vhost, check=False)
        subprocess.run(
            ["psql", server, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


if __name__ == "__main__":
    main()
