"""Catalog read benchmark: catalog's CPU per `GET /v1/products/{id}`.

    uv run python bench/catalog_read.py [--rounds 3] [--seconds 8] [--connections 16]
                                        [--against DIR ...]

Starts catalog with its own `serve` command on a fresh database named for the run (created,
migrated and seeded with the demo products, dropped at the end), pinned to core 1 with
taskset; wrk runs on core 0 against one product (keep-alive connections). Prints req/s,
p50/p99 and catalog's CPU µs per request (utime + stime from /proc over the run divided by
the requests wrk counted), medians of the rounds. Logging as deployed (INFO, the access
line per request), no broker, no exporter.

`--against DIR` (repeatable) also serves catalog from another checkout's sources (say a
`git worktree` of an older commit) on the same database; the rounds alternate the variants
(A, B, A, B, ...), so a busy machine disturbs each alike. Sends traffic to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway import (  # a sibling script: the same wrk, /proc and process helpers
    BIN,
    PROXY_CPU,
    Run,
    median_run,
    start,
    stop_all,
    wait_http,
    wrk,
)

from bazaar.shared.testing.postgres import LOCAL_POSTGRES, with_database
from bazaar.shared.testing.server import free_port

SERVICE_CPU = PROXY_CPU  # catalog alone on core 1; wrk (and PostgreSQL's share) on core 0
WARM_UP_SECONDS = 2.0


def catalog_command(source: Path | None) -> tuple[list[str], dict[str, str]]:
    """The command serving catalog from this checkout, or from `source`'s sources."""
    if source is None:
        return [str(BIN / "bazaar-catalog"), "serve"], {}
    paths = [source / "services" / "catalog" / "src", source / "shared" / "src"]
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        sys.exit(f"--against {source}: no {', '.join(missing)}")
    pythonpath = os.pathsep.join(str(p) for p in paths)
    return [sys.executable, "-m", "bazaar.catalog.cli", "serve"], {"PYTHONPATH": pythonpath}


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector stand-in: accepts every POST /v1/traces, keeps nothing."""

    received = 0  # bytes of spans received, all handlers together

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Collector.received += len(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def collector() -> ThreadingHTTPServer:
    """Start the collector stand-in on a free 127.0.0.1 port (a thread of this process)."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def prepare(env: dict[str, str]) -> None:
    """Create, migrate and seed the run's database with catalog's own commands."""
    for command in ("create-db", "migrate", "seed"):
        subprocess.run(
            [str(BIN / "bazaar-catalog"), command],
            env={**os.environ, **env},
            check=True,
            stdout=subprocess.DEVNULL,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--against",
        type=Path,
        action="append",
        default=[],
        help="also measure catalog served from this checkout (alternating rounds)",
    )
    parser.add_argument(
        "--export",
        action="store_true",
        help="export traces (OTEL_EXPORTER_OTLP_ENDPOINT) to a collector stand-in",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk")
    server = os.environ.get("BAZAAR_TEST_DATABASE_URL", LOCAL_POSTGRES)
    name = f"bazaar_bench_catalog_read_{os.getpid()}"
    base_env = {
        "CATALOG_DATABASE_URL": with_database(server, name),
        "CATALOG_ENVIRONMENT": "test",
    }
    variants: dict[str, Path | None] = {"this checkout": None}
    variants.update({str(source): source.resolve() for source in args.against})
    procs: list[subprocess.Popen[bytes]] = []
    sink = collector() if args.export else None
    try:
        prepare(base_env)
        if sink is not None:
            host, port = sink.server_address[:2]
            base_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://{host!s}:{port}"
        urls: dict[str, str] = {}
        pids: dict[str, int] = {}
        for label, source in variants.items():
            port = free_port()
            command, extra = catalog_command(source)
            proc = start(command, SERVICE_CPU, {**base_env, **extra, "CATALOG_PORT": str(port)})
            procs.append(proc)
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/readyz")
            with urllib.request.urlopen(f"{base}/v1/products?limit=1") as answer:
                product = json.load(answer)["items"][0]["id"]
            urls[label] = f"{base}/v1/products/{product}"
            pids[label] = proc.pid
        for label, url in urls.items():  # warm up: pool connections, caches, lazy imports
            wrk(url, WARM_UP_SECONDS, args.connections, {}, pids[label])
        runs: dict[str, list[Run]] = {label: [] for label in variants}
        for round_ in range(1, args.rounds + 1):
            for label, url in urls.items():
                run = wrk(url, args.seconds, args.connections, {}, pids[label])
                runs[label].append(run)
                print(
                    f"round {round_} {label}: {run.rps:.0f} req/s, p50 {run.p50_ms:.2f} ms, "
                    f"p99 {run.p99_ms:.2f} ms, catalog {run.cpu_us:.0f} µs/req",
                    flush=True,
                )
        print(
            f"\ncatalog GET /v1/products/{{id}}: catalog on core {SERVICE_CPU}, wrk on the other,"
            f" {args.connections} keep-alive connections, medians of {args.rounds} x "
            f"{args.seconds:g} s" + (", traces exported" if sink else ", nothing exported")
        )
        print(f"  {'catalog':<32}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12}")
        for label, measured in runs.items():
            med = median_run(measured)
            print(
                f"  {label:<32}{med.rps:>9.0f}{med.p50_ms:>9.2f}{med.p99_ms:>9.2f}"
                f"{med.cpu_us or 0:>12.0f}"
            )
        if sink is not None:
            print(f"  the collector stand-in received {_Collector.received / 1e6:.1f} MB of spans")
    finally:
        stop_all(procs)
        if sink is not None:
            sink.shutdown()
        subprocess.run(
            ["psql", server, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


if __name__ == "__main__":
    main()
