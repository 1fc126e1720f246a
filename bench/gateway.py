"""Gateway benchmark: wrk against the upstream directly, nginx, and the gateway.

    uv run python bench/gateway.py [--rounds 3] [--seconds 8] [--connections 32]
        [--layout both|proxy-bound|realistic] [--no-redis] [--compare CHECKOUT]

Proxy-bound layout: the upstream (bench/upstream.py) and wrk share core 0, the proxy under
test runs alone on core 1 (taskset). bench/minimal_proxy.py is the floor: the least an
aiohttp proxy can do, to tell the gateway's own cost from aiohttp's; bench/raw_proxy.py is
the floor of the other design, a proxy on raw uvloop protocols with a C parser (httptools).
Before measuring, every target must answer 200 with the direct answer's body.
Configurations alternate over the rounds; the tables give medians, with each proxy's CPU per
request as a multiple of nginx's. Realistic layout: the same chain through to catalog's
GET /v1/products/{id}, with the gateway's rate limits counted in Redis
as `make up` runs it ($BAZAAR_TEST_REDIS_URL, else the local 127.0.0.1:6379; keys under a
prefix of the run's own, deleted after); it prints the gateway's CPU µs per request beside
nginx's and their ratio; after each gateway run it checks the run really counted in Redis
(no fallback in the gateway's metrics, counters under the prefix) and exits otherwise.
`--compare CHECKOUT` adds another checkout's gateway (its own .venv) to the realistic
rounds, interleaved, for A/B figures on a busy machine.
Needs Debian's wrk and nginx (installed here when missing). Sends traffic to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bazaar.shared.testing.server import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOAD_CPU, PROXY_CPU = "0", "1"
NGINX, MINIMAL, RAW = "nginx (1 worker)", "minimal aiohttp proxy", "raw asyncio proxy"
#: The same gateway with its response cache on, measured apart: hits proxy nothing.
CACHE_HITS = "gateway, cache hits"
#: The gateway's count of rate-limit decisions taken in process (gateway/metrics.py).
FALLBACKS = "gateway_rate_limit_fallbacks_total"


@dataclass
class Run:
    """One wrk run against one target."""

    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None  # the proxy's CPU per request


def ensure_tools() -> None:
    """Install Debian's wrk and nginx if they are missing."""
    missing = [
        t
        for t in ("wrk", "nginx")
        if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()
    ]
    if missing:
        print(f"installing {' '.join(missing)} from Debian's packages")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True)


def start(cmd: list[str], cpu: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a process pinned to a core."""
    return subprocess.Popen(
        ["taskset", "-c", cpu, *cmd],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_http(url: str, headers: dict[str, str] | None = None) -> None:
    """Poll until the URL answers."""
    for _ in range(200):
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=1)
            return
        except Exception:
            time.sleep(0.1)
    sys.exit(f"{url} did not answer")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, its threads and its child processes so far.

    nginx serves from a worker process forked by its master: count the whole tree.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / CLK_TCK
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        total += sum(cpu_seconds(int(c)) for c in children.read_text().split())
    return total


_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(
    url: str,
    seconds: float,
    connections: int,
    headers: dict[str, str],
    pid: int | None,
    rate: float | None = None,
) -> Run:
    """Run wrk on the load core; with `rate`, pace every connection to that total rate."""
    cmd = [
        "taskset",
        "-c",
        LOAD_CPU,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
    ]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    script = None
    if rate:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(f"function delay() return {connections * 1000 / rate:.3f} end\n")
        script.close()
        cmd += ["-s", script.name]
    cpu_before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    cpu_after = cpu_seconds(pid) if pid else 0.0
    if script:
        os.unlink(script.name)
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    lat = {m[1]: float(m[2]) * _UNITS[m[3]] for m in _LATENCY.finditer(out)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        sys.exit(f"{url}: {non2xx[1]} non-2xx answers; the benchmark setup is wrong:\n{out}")
    cpu = (cpu_after - cpu_before) * 1e6 / total if pid else None
    return Run(rps, lat.get("50", 0.0), lat.get("99", 0.0), cpu)


def nginx_config(port: int, upstream_port: int, workdir: Path) -> Path:
    """A one-worker reverse proxy with upstream keep-alive."""
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    return conf


def gateway_env(
    port: int,
    upstream: str,
    *,
    full: bool,
    jwks: str,
    issuer: str,
    redis: tuple[str, str] | None = None,
    cache: bool = False,
) -> dict[str, str]:
    """Settings of a gateway under test: the plain proxy, or the full chain; `redis` (URL,
    key prefix): the full chain's rate limits are counted there, as `make up` does.

    The response cache is off unless `cache`: catalog's product answers are cacheable
    (`public, s-maxage`), and a gateway answering from its cache proxies nothing (its
    figures would be cache hits, not the cost of proxying a request)."""
    auth = "token" if full else "public"
    routes = [
        {
            "prefix": "/v1/products",
            "upstream": "catalog",
            "auth": auth,
            "scope": "catalog:read" if full else None,
        }
    ]
    return {
        "GATEWAY_PORT": str(port),
        "GATEWAY_ENVIRONMENT": "test",
        "GATEWAY_UPSTREAMS": json.dumps({"catalog": {"url": upstream}}),
        "GATEWAY_ROUTES": json.dumps(routes),
        "GATEWAY_RATE_LIMITING": "true" if full else "false",
        "GATEWAY_RATE_LIMITS": json.dumps(
            {p: {"quota": 10**9, "window": 60} for p in ("user", "anonymous", "token")}
        ),
        "GATEWAY_JWT_JWKS_URL": jwks,
        "GATEWAY_JWT_ISSUER": issuer,
        "GATEWAY_LOG_LEVEL": "INFO" if full else "WARNING",
        "GATEWAY_CACHE_ENABLED": "true" if cache else "false",
        **(
            {
                "GATEWAY_REDIS_URL": redis[0],
                "GATEWAY_REDIS_PREFIX": redis[1],
                # The cache's entries under the run's prefix too (deleted after the run).
                "GATEWAY_CACHE_REDIS_PREFIX": f"{redis[1]}cache:",
            }
            if redis
            else {}
        ),
    }


def median_run(runs: list[Run]) -> Run:
    """The per-field medians of several runs."""
    cpus = [r.cpu_us for r in runs if r.cpu_us is not None]
    return Run(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        statistics.median(cpus) if cpus else None,
    )


def table(title: str, results: dict[str, Run], baseline: str) -> None:
    """Print one layout's table with ratios to the baseline's req/s and to nginx's CPU."""
    print(f"\n{title}")
    width = len(baseline) + 6
    print(
        f"  {'configuration':<28}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'proxy CPU µs/req':>18}{'CPU vs nginx':>14}{'vs ' + baseline:>{width}}"
    )
    base = results[baseline].rps
    nginx_cpu = results[NGINX].cpu_us
    for name, run in results.items():
        cpu = f"{run.cpu_us:.0f}" if run.cpu_us is not None else "-"
        vs_nginx = f"{run.cpu_us / nginx_cpu:.2f}x" if run.cpu_us and nginx_cpu else "-"
        print(
            f"  {name:<28}{run.rps:>10.0f}{run.p50_ms:>9.2f}{run.p99_ms:>9.2f}"
            f"{cpu:>18}{vs_nginx:>14}{run.rps / base:>{width - 1}.2f}x"
        )


def same_answers(targets: dict[str, tuple[str, dict[str, str], int | None]]) -> None:
    """Exit unless every target answers 200 with the first (direct) target's body: a fast
    wrong answer (an error page, an empty body) would pass wrk's status check."""
    bodies: dict[str, bytes] = {}
    for label, (url, headers, _) in targets.items():
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as answer:
            if answer.status != 200:
                sys.exit(f"{label}: {url} answered {answer.status}, not 200")
            bodies[label] = answer.read()
    direct, expected = next(iter(bodies.items()))
    for label, body in bodies.items():
        if body != expected:
            sys.exit(f"{label}: its body differs from {direct}'s:\n{body!r}\n{expected!r}")


def floor_proxies(upstream: str) -> dict[str, tuple[int, subprocess.Popen[bytes]]]:
    """The two floors on the proxy core, forwarding to `upstream`: label -> (port, process)."""
    proxies: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    for label, script in ((MINIMAL, "minimal_proxy.py"), (RAW, "raw_proxy.py")):
        port = free_port()
        command = [sys.executable, str(ROOT / "bench" / script), str(port), upstream]
        proxies[label] = (port, start(command, PROXY_CPU))
    return proxies


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process, wait for it, kill what hangs."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def realistic(args: argparse.Namespace, token: str, work: Path) -> None:
    """The same chain through to catalog's GET /v1/products/{id} (PostgreSQL behind it)."""
    from bazaar.shared.testing.postgres import LOCAL_POSTGRES, with_database
    from bazaar.shared.testing.redis import LOCAL_REDIS, delete_prefixed
    from bazaar.shared.testing.tokens import TokenIssuer

    server = os.environ.get("BAZAAR_TEST_DATABASE_URL", LOCAL_POSTGRES)
    name = f"bazaar_bench_catalog_{os.getpid()}"
    redis_url = os.environ.get("BAZAAR_TEST_REDIS_URL", LOCAL_REDIS)
    redis = None if args.no_redis else (redis_url, f"bazaar-bench:{os.getpid()}:")
    if redis:
        redis_answers(redis_url)
    database = with_database(server, name)
    catalog_port, nginx_port, gateway_port = free_port(), free_port(), free_port()
    env = {
        "CATALOG_DATABASE_URL": database,
        "CATALOG_PORT": str(catalog_port),
        "CATALOG_ENVIRONMENT": "test",
        "CATALOG_LOG_LEVEL": "WARNING",
    }
    procs: list[subprocess.Popen[bytes]] = []
    for command in ("create-db", "migrate", "seed"):
        subprocess.run(
            [str(BIN / "bazaar-catalog"), command],
            env={**os.environ, **env},
            check=True,
            stdout=subprocess.DEVNULL,
        )
    try:
        catalog = start([str(BIN / "bazaar-catalog"), "serve"], LOAD_CPU, env)
        procs.append(catalog)
        base = f"http://127.0.0.1:{catalog_port}"
        wait_http(f"{base}/readyz")
        with urllib.request.urlopen(f"{base}/v1/products?limit=1") as answer:
            product = json.load(answer)["items"][0]["id"]
        conf_dir = work / "realistic"
        conf_dir.mkdir()
        nginx = start(
            ["nginx", "-c", str(nginx_config(nginx_port, catalog_port, conf_dir))], PROXY_CPU
        )
        jwks = f"http://127.0.0.1:{_jwks_port(work)}/jwks.json"

        def settings(port: int, *, cache: bool = False) -> dict[str, str]:
            # Each gateway counts under its own prefix: `counted_in_redis` finds its keys.
            own = None if redis is None else (redis[0], f"{redis[1]}hits:" if cache else redis[1])
            return gateway_env(
                port,
                base,
                full=True,
                jwks=jwks,
                issuer=TokenIssuer.ISSUER,
                redis=own,
                cache=cache,
            )

        gateway = start([str(BIN / "bazaar-gateway"), "serve"], PROXY_CPU, settings(gateway_port))
        cached_port = free_port()
        cached = start(
            [str(BIN / "bazaar-gateway"), "serve"], PROXY_CPU, settings(cached_port, cache=True)
        )
        floors = floor_proxies(base)
        procs += [nginx, gateway, cached, *(proc for _, proc in floors.values())]
        path = f"/v1/products/{product}"
        auth = {"Authorization": f"Bearer {token}"}
        limits = "Redis limits" if redis else "in-process limits"
        gateway_label = f"gateway, {limits}"
        targets: dict[str, tuple[str, dict[str, str], int | None]] = {
            "catalog directly": (f"{base}{path}", {}, None),
            NGINX: (f"http://127.0.0.1:{nginx_port}{path}", {}, nginx.pid),
            **{
                label: (f"http://127.0.0.1:{port}{path}", {}, proc.pid)
                for label, (port, proc) in floors.items()
            },
            gateway_label: (f"http://127.0.0.1:{gateway_port}{path}", auth, gateway.pid),
            # Not a proxying figure: what the same gateway costs answering from its cache.
            CACHE_HITS: (f"http://127.0.0.1:{cached_port}{path}", auth, cached.pid),
        }
        gateways = {
            gateway_label: f"http://127.0.0.1:{gateway_port}",
            CACHE_HITS: f"http://127.0.0.1:{cached_port}",
        }
        if args.compare:
            other_port = free_port()
            other = start(
                [str(Path(args.compare) / ".venv" / "bin" / "bazaar-gateway"), "serve"],
                PROXY_CPU,
                settings(other_port),
            )
            procs.append(other)
            other_url = f"http://127.0.0.1:{other_port}{path}"
            targets[f"{gateway_label} (compared)"] = (other_url, auth, other.pid)
            gateways[f"{gateway_label} (compared)"] = f"http://127.0.0.1:{other_port}"
        for url, headers, _ in targets.values():
            wait_http(url, headers)
        same_answers(targets)
        runs: dict[str, list[Run]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for label, (url, headers, pid) in targets.items():
                runs[label].append(wrk(url, args.seconds, args.connections, headers, pid))
                if redis and label in gateways:  # fails loudly, not with in-process figures
                    prefix = f"{redis[1]}hits:" if label == CACHE_HITS else redis[1]
                    counted_in_redis(label, gateways[label], redis[0], prefix)
                if label == CACHE_HITS:
                    answered_from_cache(gateways[label])
        results = {label: median_run(r) for label, r in runs.items()}
        table(
            "Realistic layout (catalog + PostgreSQL + wrk on core 0, proxy on core 1)",
            results,
            "catalog directly",
        )
        nginx_cpu = results[NGINX].cpu_us or 0.0
        for label in targets:
            cpu = results[label].cpu_us
            if label != NGINX and cpu is not None and nginx_cpu:
                print(
                    f"\n  {label}: {cpu:.0f} µs CPU per request, nginx {nginx_cpu:.0f} µs: "
                    f"{cpu / nginx_cpu:.2f}x nginx (target <= 2.5x, stretch 2x)"
                )
        print(
            "  (floors: of an aiohttp gateway, bench/minimal_proxy.py; of a gateway on raw"
            " asyncio protocols with httptools, bench/raw_proxy.py)"
        )
    finally:
        stop_all(procs)
        if redis:
            import asyncio

            asyncio.run(delete_prefixed(*redis))
        subprocess.run(
            ["psql", server, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def redis_answers(url: str) -> None:
    """Exit unless Redis answers: the gateway would count in process, mislabelled."""
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:
        sys.exit(f"Redis at {url} does not answer ({exc}): start it, or pass --no-redis")


def counted_in_redis(label: str, gateway: str, redis_url: str, prefix: str) -> None:
    """Exit unless the gateway's last run counted every rate limit in Redis: no decision
    fell back to in-process counters (its metric), and counters exist under the prefix."""
    import redis

    with urllib.request.urlopen(f"{gateway}/metrics", timeout=5) as answer:
        metrics = answer.read().decode()
    found = re.search(rf"^{FALLBACKS} (\S+)$", metrics, re.M)
    if found is None:
        sys.exit(f"{label}: {gateway}/metrics has no {FALLBACKS}: cannot tell Redis was used")
    if float(found[1]):
        sys.exit(
            f"{label}: {float(found[1]):.0f} rate-limit decisions fell back to in-process "
            "counters (Redis failed or was slow): these are not 'Redis limits' figures"
        )
    with redis.Redis.from_url(redis_url, socket_timeout=2) as client:
        if next(client.scan_iter(match=f"{prefix}*", count=1000), None) is None:
            sys.exit(f"{label}: no rate-limit counter under {prefix!r} in Redis at {redis_url}")


def answered_from_cache(gateway: str) -> None:
    """Exit unless the cache-hits gateway's answers so far were nearly all cache hits (a
    cache that failed turns itself off with a log line: its figures would be proxying)."""
    with urllib.request.urlopen(f"{gateway}/metrics", timeout=5) as answer:
        metrics = answer.read().decode()
    counts: dict[str, float] = {}
    for result, value in re.findall(
        r'^gateway_cache_requests_total\{[^}]*result="(\w+)"[^}]*\} (\S+)$', metrics, re.M
    ):
        counts[result] = counts.get(result, 0.0) + float(value)
    total = sum(counts.values())
    if total == 0 or counts.get("hit", 0.0) < 0.99 * total:
        sys.exit(f"{CACHE_HITS}: not answered from the cache ({counts or 'no cache metric'})")


def _jwks_port(work: Path) -> int:
    return int((work / "jwks.port").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--layout",
        choices=("both", "proxy-bound", "realistic"),
        default="both",
        help="measure one layout only (while iterating; the reference figures need both)",
    )
    parser.add_argument(
        "--no-redis",
        action="store_true",
        help="realistic layout: count rate limits in process, not in Redis",
    )
    parser.add_argument(
        "--compare",
        metavar="CHECKOUT",
        help="realistic layout: also measure the gateway of another checkout (its .venv)",
    )
    args = parser.parse_args()
    ensure_tools()
    from bazaar.shared.testing.tokens import TokenIssuer  # a signed token and its JWKS

    issuer = TokenIssuer()
    token = issuer.issue("bench-user", ("catalog:read",), expires_in=3600)
    procs: list[subprocess.Popen[bytes]] = []
    work = Path(tempfile.mkdtemp(prefix="bazaar-bench-"))
    try:
        jwks_port = free_port()
        (work / "jwks.json").write_text(json.dumps(issuer.jwks()))
        procs.append(
            start(
                [
                    sys.executable,
                    "-m",
                    "http.server",
                    str(jwks_port),
                    "-b",
                    "127.0.0.1",
                    "-d",
                    str(work),
                ],
                LOAD_CPU,
            )
        )
        jwks = f"http://127.0.0.1:{jwks_port}/jwks.json"
        (work / "jwks.port").write_text(str(jwks_port))
        up_port = free_port()
        procs.append(
            start([sys.executable, str(ROOT / "bench" / "upstream.py"), str(up_port)], LOAD_CPU)
        )
        upstream = f"http://127.0.0.1:{up_port}"
        nginx_port, plain_port, full_port = free_port(), free_port(), free_port()
        floors = floor_proxies(upstream)
        procs += [proc for _, proc in floors.values()]
        nginx = start(["nginx", "-c", str(nginx_config(nginx_port, up_port, work))], PROXY_CPU)
        plain = start(
            [str(BIN / "bazaar-gateway"), "serve"],
            PROXY_CPU,
            gateway_env(plain_port, upstream, full=False, jwks=jwks, issuer=TokenIssuer.ISSUER),
        )
        full = start(
            [str(BIN / "bazaar-gateway"), "serve"],
            PROXY_CPU,
            gateway_env(full_port, upstream, full=True, jwks=jwks, issuer=TokenIssuer.ISSUER),
        )
        procs += [nginx, plain, full]
        path = "/v1/products/3fa85f64-5717-4562-b3fc-2c963f66afa6"
        auth = {"Authorization": f"Bearer {token}"}
        targets: dict[str, tuple[str, dict[str, str], int | None]] = {
            "upstream directly": (f"{upstream}{path}", {}, None),
            NGINX: (f"http://127.0.0.1:{nginx_port}{path}", {}, nginx.pid),
            **{
                label: (f"http://127.0.0.1:{port}{path}", {}, proc.pid)
                for label, (port, proc) in floors.items()
            },
            "gateway, plain": (f"http://127.0.0.1:{plain_port}{path}", {}, plain.pid),
            "gateway, full chain": (f"http://127.0.0.1:{full_port}{path}", auth, full.pid),
        }
        if args.layout == "realistic":
            realistic(args, token, work)
            return
        for url, headers, _ in targets.values():
            wait_http(url, headers)
        same_answers(targets)
        runs: dict[str, list[Run]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, (url, headers, pid) in targets.items():
                runs[name].append(wrk(url, args.seconds, args.connections, headers, pid))
        results = {name: median_run(r) for name, r in runs.items()}
        print(
            f"{os.cpu_count()} cores; wrk -t1 -c{args.connections} keep-alive, "
            f"{args.seconds:.0f} s x {args.rounds} rounds, medians"
        )
        table("Proxy-bound layout (proxy alone on core 1)", results, NGINX)
        full_r, plain_r, nginx_r = (
            results["gateway, full chain"],
            results["gateway, plain"],
            results[NGINX],
        )
        print(
            f"\n  full chain / nginx req/s: {full_r.rps / nginx_r.rps:.2f}"
            " (target >= 0.50, stretch 0.65)"
        )
        print(
            f"  full chain cost vs plain gateway: {1 - full_r.rps / plain_r.rps:.0%} of req/s"
            " (target <= 20%)"
        )
        rate = full_r.rps / 2
        paced = {
            name: wrk(
                targets[name][0],
                args.seconds,
                args.connections,
                targets[name][1],
                targets[name][2],
                rate=rate,
            )
            for name in ("upstream directly", "gateway, full chain")
        }
        added50 = paced["gateway, full chain"].p50_ms - paced["upstream directly"].p50_ms
        added99 = paced["gateway, full chain"].p99_ms - paced["upstream directly"].p99_ms
        print(
            f"  added latency at half the full chain's peak ({rate:.0f} req/s): "
            f"p50 {added50:.2f} ms (target <= 1), p99 {added99:.2f} ms (target <= 5)"
        )
        if args.layout == "both":
            realistic(args, token, work)
    finally:
        stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
