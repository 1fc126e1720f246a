"""Chaos soak: orders under load while processes die and the infrastructure restarts.

    uv run python bench/chaos.py            # ~4 minutes; --short: each fault once, ~2 minutes

Brings up a PostgreSQL cluster, a Redis and a RabbitMQ node of its own (temporary directories,
free ports on 127.0.0.1; `--infra=local` uses the machine's servers instead and then skips
the infrastructure restarts), starts the suite with the project's supervisor
(scripts/bazaar_suite.py + scripts/supervise.py, as `make up` does), registers customers,
binds an outside durable queue to `bazaar.events`, and places orders through the gateway
(retrying each Idempotency-Key until a final answer, cancelling some). Under that load, one
after another: SIGKILL of orders, catalog, the gateway (the supervisor restarts them);
SIGSTOP of catalog; restarts of RabbitMQ, PostgreSQL and Redis. Then it settles and checks
the services' tables and the tapped events, prints a table per fault and the verdict line;
the exit status is 1 when a target is missed (all zeros, max_recovery_s <= 3).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import FrameType

from chaos_checks import EventTap, check, settle
from chaos_faults import FAULT_NAMES, Restartable, catalog_of_faults, run_faults, select, table
from chaos_load import Clients
from chaos_logs import digest
from chaos_report import RATE_TARGET, achieved, failed, states_line, verdict_line
from chaos_seed import customers, products
from chaos_suite import Infra, Suite

from bazaar.shared.testing.private import PrivatePostgres, PrivateRabbit, PrivateRedis


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--infra", choices=("private", "local"), default="private")
    parser.add_argument("--short", action="store_true", help="lighter load, shorter pauses")
    parser.add_argument("--rate", type=float, help="orders offered per second (default 100)")
    parser.add_argument("--customers", type=int, default=40)
    parser.add_argument("--warmup", type=float, help="seconds of load before the first fault")
    parser.add_argument("--gap", type=float, help="seconds of calm after each recovery")
    parser.add_argument(
        "--down", type=float, default=1.0, help="seconds a restarted server is down"
    )
    parser.add_argument("--pause", type=float, default=8.0, help="seconds catalog stays stopped")
    parser.add_argument("--settle", type=float, default=60.0)
    parser.add_argument("--only", help="comma-separated words: run only faults naming them")
    parser.add_argument(
        "--work", type=Path, help="an empty directory for the servers and logs (default: a new one)"
    )
    args = parser.parse_args()
    args.rate = args.rate or (30.0 if args.short else 100.0)
    args.warmup = args.warmup if args.warmup is not None else (5.0 if args.short else 10.0)
    args.gap = args.gap if args.gap is not None else (2.0 if args.short else 6.0)
    if args.short:
        args.customers = min(args.customers, 10)
    if args.only and not select([(n, None) for n in FAULT_NAMES], args.only):
        parser.error(f"--only {args.only!r} names none of the faults: {', '.join(FAULT_NAMES)}")
    return args


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


async def soak(
    args: argparse.Namespace, suite: Suite, restartable: dict[str, Restartable], tap: EventTap
) -> int:
    """Seed, load, inject, settle, check, print; the exit status."""
    gateway = suite.url("gateway")
    await tap.bind()  # before any order exists: an outside subscriber sees everything
    scarce = int(args.rate * 40)  # runs short during the soak: some orders get 409
    initial = await products(gateway, [1_000_000] * 4 + [scarce, scarce // 2])
    clients = Clients(gateway, await customers(gateway, args.customers), list(initial))
    faults = catalog_of_faults(suite, restartable, args.down, args.pause)
    faults = select(faults, args.only)
    print(f"load: {args.rate:g} orders/s offered by {args.customers} customers", flush=True)
    stop = asyncio.Event()
    first = time.monotonic()
    loading = asyncio.create_task(clients.run_until(args.rate, stop))
    await asyncio.sleep(args.warmup)
    outcomes = await run_faults(faults, clients.load, wait=30.0, gap=args.gap)
    stop.set()
    last = time.monotonic()
    await loading
    load = clients.load
    print(f"load done: {load.journeys} journeys in {load.seconds:.0f} s, settling …", flush=True)
    dsns = {s: suite.database_url(s) for s in ("orders", "catalog")}
    settled = await settle(dsns, tap, sorted(set(load.keys.values())), args.settle)
    verdict = await check(load, dsns, initial, tap, events_wait=args.settle)
    recoveries = [o.recovery_s for o in outcomes]
    worst = max((r if r is not None else float("inf") for r in recoveries), default=0.0)
    print()
    print("\n".join(table(outcomes, load, first, last)))
    rate = achieved(load)
    print(
        f"\noffered {load.journeys / load.seconds:.0f} orders/s, answered finally "
        f"{rate.answered:.0f}/s, placed (201/202) {rate.placed:.0f}/s; {len(load.attempts)} "
        f"requests; unfinished journeys {load.unfinished}; not started (too many in flight) "
        f"{load.skipped}; settled in {settled:.1f} s; restarts of killed processes: the "
        "supervisor (scripts/supervise.py)"
    )
    print(f"  {verdict.checked}")
    print(f"  {states_line(verdict, load)}")
    for line in verdict.details[:20]:
        print(f"  {line}")
    print("\nwarnings and errors the programs logged (count, level, logger: message | exception):")
    print("\n".join(digest(suite.run_dir, ("gateway", "orders", "catalog", "auth"))))
    slow = rate.answered < RATE_TARGET * args.rate
    if slow:
        judged = (
            "a missed target" if not args.short else "reported only: --short runs on any machine"
        )
        print(
            f"answered {rate.answered:.0f}/s < {RATE_TARGET:g} x {args.rate:g} offered ({judged})"
        )
    print(verdict_line(verdict, load, worst))
    return 1 if failed(verdict, load, worst) or (slow and not args.short) else 0


def _local_infra(run_id: str) -> Infra:
    vhost = f"bazaar-chaos-{run_id}"
    for command in (
        ["add_vhost", vhost],
        ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
    ):
        subprocess.run(["rabbitmqctl", "-q", *command], check=True, capture_output=True)
    return Infra(
        postgres="postgresql://postgres@127.0.0.1:5432",
        amqp=f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
        redis="redis://127.0.0.1:6379/0",
        db_prefix=f"bazaar_chaos_{run_id}",
    )


def _drop_local(infra: Infra, run_id: str) -> None:
    for service in ("auth", "catalog", "orders"):
        sql = f"DROP DATABASE IF EXISTS {infra.db_prefix}_{service} WITH (FORCE)"
        subprocess.run(
            ["psql", f"{infra.postgres}/postgres", "-qc", sql], capture_output=True, check=False
        )
    subprocess.run(
        ["rabbitmqctl", "-q", "delete_vhost", f"bazaar-chaos-{run_id}"],
        capture_output=True,
        check=False,
    )


def main() -> int:
    """Run the soak; clean up whatever happens."""
    args = _arguments()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    run_id = uuid.uuid4().hex[:8]
    work = args.work or Path(tempfile.mkdtemp(prefix=f"bazaar-chaos-{run_id}-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # the servers run as postgres and rabbitmq
    servers: list[PrivatePostgres | PrivateRedis | PrivateRabbit] = []
    suite: Suite | None = None
    infra: Infra | None = None
    try:
        restartable: dict[str, Restartable] = {}
        if args.infra == "private":
            postgres, redis, rabbit = (
                PrivatePostgres(work),
                PrivateRedis(work),
                PrivateRabbit(work, run_id),
            )
            for server in (postgres, redis, rabbit):
                servers.append(server)
                server.start()
            restartable = {"postgres": postgres, "redis": redis, "rabbitmq": rabbit}
            infra = Infra(postgres.url, rabbit.url, redis.url, "bazaar_chaos")
            print(f"private infrastructure: PostgreSQL :{postgres.port}, Redis :{redis.port}, "
                  f"RabbitMQ {rabbit.node} :{rabbit.port}", flush=True)  # fmt: skip
        else:
            infra = _local_infra(run_id)
            print("the machine's PostgreSQL, RabbitMQ and Redis: no infrastructure restarts")
        suite = Suite(work, infra)
        started = time.monotonic()
        suite.start()
        print(
            f"suite ready in {time.monotonic() - started:.0f} s; logs in {suite.run_dir}",
            flush=True,
        )
        tap = EventTap(infra.amqp, f"chaos.soak.{run_id}")
        status = asyncio.run(soak(args, suite, restartable, tap))
        if args.infra == "local":
            asyncio.run(tap.delete())
        return status
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        with contextlib.suppress(Exception):
            if suite is not None:
                suite.stop()
        for server in reversed(servers):
            with contextlib.suppress(Exception):
                server.stop()
        if args.infra == "local" and infra is not None:
            _drop_local(infra, run_id)
        logs = work / "logs"
        if logs.exists():
            print(f"service logs kept in {logs}", file=sys.stderr)
        for leftover in work.iterdir():
            if leftover.name != "logs":
                shutil.rmtree(
                    leftover, ignore_errors=True
                ) if leftover.is_dir() else leftover.unlink()


if __name__ == "__main__":
    sys.exit(main())
