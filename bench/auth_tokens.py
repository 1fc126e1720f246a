"""Auth benchmark: token issuance per second and verification cost per token.

    uv run python bench/auth_tokens.py [--seconds 10] [--concurrency 16]

Starts a real auth server (`bazaar-auth serve`, its own process, on 127.0.0.1) over a
throwaway database, drives the token endpoint from this process with aiohttp, and times
the shared verifier on tokens the server issued. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import httpx

from bazaar.auth.cli import MIGRATIONS_DIR
from bazaar.shared import migrations
from bazaar.shared.auth import TokenVerifier, VerifierSettings
from bazaar.shared.dbadmin import ensure_database
from bazaar.shared.testing.postgres import LOCAL_POSTGRES, with_database
from bazaar.shared.testing.server import free_port

ROOT = Path(__file__).resolve().parents[1]
ISSUER = "http://bench.bazaar.test"
CLIENT = ("bench-client", "bench-client-secret-0123456789")
ADMIN = ("admin@bench.test", "bench-admin-password")


def start_auth(database_url: str, port: int, alg: str | None) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AUTH_DATABASE_URL": database_url,
        "AUTH_PORT": str(port),
        "AUTH_ENVIRONMENT": "test",
        "AUTH_JWT_ISSUER": ISSUER,
        "AUTH_ADMIN_EMAIL": ADMIN[0],
        "AUTH_ADMIN_PASSWORD": ADMIN[1],
        "AUTH_CLIENTS": f'[{{"client_id": "{CLIENT[0]}", "secret": "{CLIENT[1]}", '
        '"scopes": ["catalog:reserve"]}]',
        "AUTH_LOG_LEVEL": "WARNING",
        **({"AUTH_SIGNING_ALG": alg} if alg else {}),
    }
    binary = ROOT / ".venv" / "bin" / "bazaar-auth"
    process = subprocess.Popen([str(binary), "serve"], env=env, stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    sys.exit("auth did not start")


async def hammer(
    url: str,
    form: dict[str, str] | list[dict[str, str]],
    seconds: float,
    concurrency: int,
) -> tuple[int, list[float], list[str]]:
    """Issue tokens for `seconds` from `concurrency` workers; count, latencies, a few tokens.

    With a list of forms, worker i always sends form i (e.g. one user per worker: one
    account's parallel logins are what the login throttle exists to stop).
    """
    forms = form if isinstance(form, list) else [form] * concurrency
    done = 0
    latencies: list[float] = []
    tokens: list[str] = []
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(form: dict[str, str]) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                async with session.post(url, data=form) as response:
                    body = await response.json()
                    if response.status != 200:
                        raise RuntimeError(f"{response.status} {body}")
                latencies.append(time.perf_counter() - start)
                done += 1
                if len(tokens) < 2000:
                    tokens.append(body["access_token"])

        await asyncio.gather(*(worker(forms[i]) for i in range(concurrency)))
    return done, latencies, tokens


async def register_users(base: str, count: int) -> list[dict[str, str]]:
    """One registered user per worker; their password-grant forms."""
    forms = []
    async with httpx.AsyncClient(base_url=base) as client:
        for i in range(count):
            email, password = f"bench-user-{i}@bench.test", f"bench password number {i}"
            answer = await client.post(
                "/v1/users", json={"email": email, "password": password, "name": f"U{i}"}
            )
            answer.raise_for_status()
            forms.append({"grant_type": "password", "username": email, "password": password})
    return forms


def spread(latencies: list[float]) -> str:
    """p50 and p99 in milliseconds."""
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    return f"p50 {p50 * 1000:.1f} ms  p99 {p99 * 1000:.1f} ms"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def verification_cost(tokens: list[str], jwks_url: str) -> tuple[float, float]:
    """Median µs per verification with a warm JWKS cache, over repeated passes."""
    verifier = TokenVerifier(VerifierSettings(jwks_url=jwks_url, issuer=ISSUER))
    try:
        await verifier.verify(tokens[0])  # warm the cache
        passes = []
        for _ in range(5):
            start = time.perf_counter()
            for token in tokens:
                await verifier.verify(token)
            passes.append((time.perf_counter() - start) / len(tokens) * 1e6)
        return statistics.median(passes), min(passes)
    finally:
        await verifier.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--alg", choices=("ES256", "RS256"), default=None, help="signing key type")
    args = parser.parse_args()

    server = os.environ.get("BAZAAR_TEST_DATABASE_URL", LOCAL_POSTGRES)
    name = f"bazaar_bench_auth_{uuid.uuid4().hex[:8]}"
    database_url = with_database(server, name)
    await ensure_database(database_url)
    await asyncio.to_thread(migrations.upgrade, MIGRATIONS_DIR, database_url)
    port = free_port()
    process = start_auth(database_url, port, args.alg)
    base = f"http://127.0.0.1:{port}"
    try:
        print(
            f"auth on {base}; {args.seconds:.0f} s per run, {args.concurrency} connections, "
            f"{os.cpu_count()} cores shared by server and load generator"
        )
        cc = {
            "grant_type": "client_credentials",
            "client_id": CLIENT[0],
            "client_secret": CLIENT[1],
        }
        await hammer(f"{base}/v1/auth/token", cc, 1.0, args.concurrency)  # warm-up
        count, latencies, tokens = await hammer(
            f"{base}/v1/auth/token", cc, args.seconds, args.concurrency
        )
        print(f"client_credentials: {count / args.seconds:8.0f} tokens/s   " + spread(latencies))
        pw = await register_users(base, args.concurrency)
        count, latencies, _ = await hammer(
            f"{base}/v1/auth/token", pw, args.seconds / 2, args.concurrency
        )
        print(
            f"password (argon2id):{count / (args.seconds / 2):8.0f} tokens/s   " + spread(latencies)
        )
        median_us, best_us = await verification_cost(tokens, f"{base}/.well-known/jwks.json")
        print(
            f"verification:       {median_us:8.1f} µs/token (median of 5 passes over "
            f"{len(tokens)} tokens; best {best_us:.1f} µs)"
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
        conn = await asyncpg.connect(server)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
