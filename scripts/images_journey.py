"""`make images-test`: the four images run as containers and serve the README's journey.

Each container runs as the Kubernetes base runs it (images_manifest.policy: its user, a
read-only root filesystem with only the manifests' emptyDir mounts writable as tmpfs, every
capability dropped, no privilege escalation, the memory and CPU limits), in production mode
(the images' default) with secrets made for the run, on the host's network against this
machine's PostgreSQL, RabbitMQ and Redis: per run, a PostgreSQL role per service (its
database is created by the image's own `create-db`), a RabbitMQ vhost and user, a Redis key
prefix, and free loopback ports (never `make up`'s 8000-8003). The migration step runs from
the images (`create-db`, `migrate`, `topology`, catalog's `seed`), then auth, catalog,
orders and the gateway start; once each answers /readyz and its image's HEALTHCHECK passes,
a client walks the journey through the gateway over HTTP (register, log in, order, cancel,
stock back). Then each is stopped with SIGTERM (`podman stop` with the manifests' grace
period, the gateway first) and must have drained (its own log says it stopped, none of its
requests was cut short) and exited 0 within that period. Containers, databases, roles,
vhost, user and keys are removed however the run ends; the containers' logs stay in
build/images/test/<run id>/.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import httpx
from images_manifest import ContainerPolicy, Deployable, policy
from images_podman import BUILD, ImagesError, podman, say

from bazaar.shared.testing.redis import delete_prefixed

#: The run's label on every container it starts (its cleanup finds them by it).
LABEL = "bazaar.images-test"
#: Start order; the gateway last. Stop order is the reverse.
ORDER = ("auth", "catalog", "orders", "gateway")
#: What `make up` listens on: never used here.
RESERVED_PORTS = frozenset({8000, 8001, 8002, 8003, 9090})
READY_SECONDS = 120.0
ADMIN_EMAIL = "admin@bazaar.example.com"


def _server_urls() -> tuple[str, str, str]:
    """This machine's PostgreSQL (an admin connection), RabbitMQ and Redis, as tests use them."""
    return (
        os.environ.get("BAZAAR_TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres",
        "amqp://127.0.0.1:5672/",
        os.environ.get("BAZAAR_TEST_REDIS_URL") or "redis://127.0.0.1:6379/0",
    )


def _free_ports(count: int) -> list[int]:
    """Ports free on the loopback now (the kernel's choice), none of `make up`'s."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in RESERVED_PORTS and port not in ports:
            ports.append(port)
    return ports


def _rabbitmqctl(*args: str, check: bool = True) -> None:
    done = subprocess.run(
        ["rabbitmqctl", "--quiet", *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and done.returncode != 0:
        raise ImagesError(f"rabbitmqctl {args[0]} failed: {done.stderr.strip()}")


@dataclass
class Run:
    """One images-test run: its names, ports, secrets and what it created so far."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    ports: dict[str, int] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    roles: list[str] = field(default_factory=list)
    vhost: str | None = None
    user: str | None = None
    redis_prefix: str | None = None
    env_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bazaar-images-")))

    def __post_init__(self) -> None:
        self.ports = dict(zip(ORDER, _free_ports(len(ORDER)), strict=True))

    @property
    def logs(self) -> Path:
        """Where the containers' logs are kept (build/images/test/<run id>/)."""
        return BUILD / "test" / self.id

    def container(self, name: str, step: str = "") -> str:
        """The container name of `name` (and of one of its steps) in this run."""
        return f"bazaar-images-{self.id}-{name}{'-' + step if step else ''}"

    def url(self, name: str, host: str = "127.0.0.1") -> str:
        """Where `name` serves on the host network."""
        return f"http://{host}:{self.ports[name]}"


# --- infrastructure of the run ---------------------------------------------------------------


async def _postgres(server: str, statements: list[str]) -> None:
    conn = await asyncpg.connect(server)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def provision(run: Run, services: list[str]) -> dict[str, str]:
    """A role per service, a vhost and user, a Redis prefix; each service's settings."""
    postgres, amqp, redis = _server_urls()
    for name in services:
        role, password = f"bazaar_images_{run.id}_{name}", secrets.token_hex(24)
        asyncio.run(
            _postgres(postgres, [f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{password}'"])
        )
        run.roles.append(role)
        parts = urlsplit(postgres)
        netloc = f"{role}:{password}@{parts.hostname}:{parts.port or 5432}"
        run.secrets[f"{name}-database"] = urlunsplit(parts._replace(netloc=netloc, path=f"/{role}"))
    run.vhost, run.user = f"bazaar-images-{run.id}", f"bazaar-images-{run.id}"
    _rabbitmqctl("add_vhost", run.vhost)
    password = secrets.token_hex(24)
    _rabbitmqctl("add_user", run.user, password)
    _rabbitmqctl("set_permissions", "-p", run.vhost, run.user, ".*", ".*", ".*")
    parts = urlsplit(amqp)
    run.secrets["amqp"] = urlunsplit(
        parts._replace(
            netloc=f"{run.user}:{password}@{parts.hostname}:{parts.port or 5672}",
            path="/" + quote(run.vhost, safe=""),
        )
    )
    run.redis_prefix = f"bazaar-images:{run.id}:"
    run.secrets["redis"] = redis
    for key in ("key-passphrase", "admin-password", "client-secret"):
        run.secrets[key] = secrets.token_urlsafe(36)
    return settings(run)


def settings(run: Run) -> dict[str, str]:
    """Each container's environment file: production, with this run's addresses and secrets."""
    # "localhost" (no dot): the JWKS URL counts as cluster-local, as in Kubernetes.
    jwks = f"{run.url('auth', 'localhost')}/.well-known/jwks.json"
    issuer = run.url("gateway", "localhost")
    common = {"HOST": "127.0.0.1", "JWT_ISSUER": issuer, "LOG_LEVEL": "INFO"}
    env: dict[str, dict[str, str]] = {
        "auth": {
            "ADMIN_EMAIL": ADMIN_EMAIL,
            "ADMIN_PASSWORD": run.secrets["admin-password"],
            "KEY_PASSPHRASE": run.secrets["key-passphrase"],
            "CLIENTS": json.dumps(
                [
                    {
                        "client_id": "orders",
                        "secret": run.secrets["client-secret"],
                        "scopes": ["catalog:reserve"],
                    }
                ]
            ),
        },
        "catalog": {"JWT_JWKS_URL": jwks},
        "orders": {
            "JWT_JWKS_URL": jwks,
            "CATALOG_URL": run.url("catalog"),
            "AUTH_URL": run.url("auth"),
            "CLIENT_ID": "orders",
            "CLIENT_SECRET": run.secrets["client-secret"],
        },
        "gateway": {
            "JWT_JWKS_URL": jwks,
            "UPSTREAMS": json.dumps({n: {"url": run.url(n)} for n in ORDER if n != "gateway"}),
            "REDIS_URL": run.secrets["redis"],
            "REDIS_PREFIX": f"{run.redis_prefix}ratelimit:",
            "CACHE_REDIS_PREFIX": f"{run.redis_prefix}cache:",
        },
    }
    files: dict[str, str] = {}
    for name, own in env.items():
        values = {**common, "PORT": str(run.ports[name]), **own}
        if name != "gateway":
            values["DATABASE_URL"] = run.secrets[f"{name}-database"]
            values["AMQP_URL"] = run.secrets["amqp"]
        path = run.env_dir / f"{name}.env"
        path.write_text("".join(f"{name.upper()}_{k}={v}\n" for k, v in values.items()))
        path.chmod(0o600)
        files[name] = str(path)
    return files


def release(run: Run) -> None:
    """Remove what the run created; each step is tried even when an earlier one failed."""
    postgres, _amqp, redis = _server_urls()
    steps: list[tuple[str, Callable[[], object]]] = [
        ("containers", lambda: _remove_containers(run)),
        ("env files", lambda: shutil.rmtree(run.env_dir, ignore_errors=True)),
    ]
    if run.roles:
        statements = [f"DROP DATABASE IF EXISTS {r} WITH (FORCE)" for r in run.roles]
        statements += [f"DROP ROLE IF EXISTS {r}" for r in run.roles]
        steps.append(("databases and roles", lambda: asyncio.run(_postgres(postgres, statements))))
    if run.vhost:
        steps.append(("vhost", lambda: _rabbitmqctl("delete_vhost", str(run.vhost))))
    if run.user:
        steps.append(("user", lambda: _rabbitmqctl("delete_user", str(run.user))))
    if run.redis_prefix:
        steps.append(
            ("Redis keys", lambda: asyncio.run(delete_prefixed(redis, str(run.redis_prefix))))
        )
    for what, step in steps:
        try:
            step()
        except Exception as error:  # whatever failed, the rest must still be removed
            say(f"cleanup of run {run.id}: could not remove its {what}: {error}")


def _remove_containers(run: Run) -> None:
    listed = podman("ps", "--all", "--filter", f"label={LABEL}={run.id}", "--format", "{{.Names}}")
    if names := listed.stdout.split():
        podman("rm", "--force", "--time", "0", *names)


# --- containers ------------------------------------------------------------------------------


def _run_args(
    run: Run, name: str, rules: ContainerPolicy, env_file: str, step: str = ""
) -> list[str]:
    return [
        "--name",
        run.container(name, step),
        "--label",
        f"{LABEL}={run.id}",
        "--network=host",
        "--env-file",
        env_file,
        *rules.podman_args(),
    ]


def migrate(run: Run, image: Deployable, env_file: str) -> float:
    """The image's deploy steps, as one container run as the migration Job's; seconds taken."""
    steps = ["create-db", "migrate", "topology", *(["seed"] if image.name == "catalog" else [])]
    script = " && ".join(f"bazaar-{image.name} {step}" for step in steps)
    log = run.logs / f"{image.name}-migrate.log"
    started = time.monotonic()
    done = podman(
        "run",
        "--rm",
        *_run_args(run, image.name, policy(image.name, job=True), env_file, "migrate"),
        image.image,
        "sh",
        "-c",
        script,
        check=False,
        log=log,
    )
    if done.returncode != 0:
        raise ImagesError(f"{image.name}: `{script}` exited {done.returncode}; see {log}")
    return time.monotonic() - started


def start(run: Run, image: Deployable, env_file: str) -> float:
    """Start `image`'s server; return once it answers /readyz (seconds taken)."""
    started = time.monotonic()
    podman(
        "run",
        "--detach",
        *_run_args(run, image.name, policy(image.name), env_file),
        image.image,
    )
    url = f"{run.url(image.name)}/readyz"
    deadline = started + READY_SECONDS
    while time.monotonic() < deadline:
        state = podman("inspect", "--format", "{{.State.Status}}", run.container(image.name))
        if state.stdout.strip() != "running":
            _save_log(run, image.name)
            raise ImagesError(f"{image.name} stopped while starting; see {run.logs}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    _save_log(run, image.name)
    raise ImagesError(f"{image.name} not ready within {READY_SECONDS:.0f} s; see {run.logs}")


def healthcheck(run: Run, name: str) -> None:
    """Run the image's own HEALTHCHECK command in its container; it must pass."""
    done = podman("healthcheck", "run", run.container(name), check=False)
    if done.returncode != 0:
        raise ImagesError(f"{name}: the image's HEALTHCHECK failed: {done.stdout}{done.stderr}")


@dataclass(frozen=True)
class InFlight:
    """A request held open while its process is stopped.

    Held by the client (half its body sent until then), or, with `paused`, by the upstream
    it waits on (that container frozen until then: `podman pause`).
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Mapping[str, object] | None
    status: int
    paused: str | None = None

    def head(self, port: int, length: int) -> bytes:
        """The request line and headers."""
        headers = {"Host": f"127.0.0.1:{port}", "Connection": "close", **self.headers}
        if self.body is not None:
            headers |= {"Content-Type": "application/json", "Content-Length": str(length)}
        lines = [f"{self.method} {self.path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


def in_flight(run: Run, name: str, session: Session) -> InFlight:
    """A request `name` serves on its own (the processes stopped before it are gone)."""
    user = {"email": f"late-{name}-{run.id}@example.com", "password": "x" * 16, "name": "Late"}
    if name == "orders":
        return InFlight(
            "POST",
            "/v1/orders",
            {"Authorization": f"Bearer {session.customer}", "Idempotency-Key": str(uuid.uuid4())},
            {"lines": [{"product_id": session.product, "quantity": 1}]},
            201,
        )
    if name == "catalog":
        product = {"sku": f"LATE-{run.id}", "name": "Late lamp", "price_cents": 1250}
        return InFlight(
            "POST",
            "/v1/products",
            {"Authorization": f"Bearer {session.admin}"},
            {**product, "currency": "EUR", "stock": 1},
            201,
        )
    if name == "gateway":
        # The gateway reads a whole body before it goes upstream: held by orders instead.
        headers = {"Authorization": f"Bearer {session.customer}"}
        return InFlight("GET", "/v1/orders", headers, None, 200, paused="orders")
    return InFlight("POST", "/v1/users", {}, user, 201)


def _active(run: Run, name: str) -> float:
    """`http_server_active_requests` of `name` now."""
    text = httpx.get(f"{run.url(name)}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("http_server_active_requests "):
            return float(line.split()[1])
    raise ImagesError(f"{name}'s /metrics has no http_server_active_requests")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def stop(run: Run, name: str, request: InFlight) -> float:
    """SIGTERM with `request` in flight: it must be answered, and the process exit 0 in time.

    The request is sent (its head and half its body, or all of it to wait on a frozen
    upstream) and the process counts it among its active requests; then `podman stop` sends
    SIGTERM (SIGKILL after the manifests' grace period). Once the process no longer accepts
    connections, the rest of the body goes (or the upstream thaws), and the answer must be the
    one a running process gives: it drained. Then it must have exited 0, before the grace
    period ran out, saying it was stopping (the services) and cutting nothing short.
    """
    grace = policy(name).grace_seconds
    port = run.ports[name]
    body = b"" if request.body is None else json.dumps(request.body).encode()
    held = len(body) if request.paused else len(body) // 2
    baseline = _active(run, name)
    started = time.monotonic()
    if request.paused:
        podman("pause", run.container(request.paused))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=30) as sock,
            concurrent.futures.ThreadPoolExecutor(1) as pool,
        ):
            sock.sendall(request.head(port, len(body)) + body[:held])
            _eventually(lambda: _active(run, name) > baseline, f"{name} holding the request", 10)
            stopping = pool.submit(
                podman, "stop", "--time", str(grace), run.container(name), timeout=grace + 60
            )
            _eventually(lambda: not _accepts(port), f"{name} refusing connections", 10)
            if request.paused:
                podman("unpause", run.container(request.paused))
            sock.sendall(body[held:])
            answer = http.client.HTTPResponse(sock)
            answer.begin()
            text = answer.read().decode(errors="replace")
            stopping.result()
    finally:
        if request.paused:
            podman("unpause", run.container(request.paused), check=False)
    took = time.monotonic() - started
    if answer.status != request.status:
        raise ImagesError(
            f"{name}: {request.method} {request.path} in flight at SIGTERM answered "
            f"{answer.status}, not {request.status}: {text[:300]}"
        )
    state = json.loads(podman("inspect", "--format", "{{json .State}}", run.container(name)).stdout)
    log = _save_log(run, name)
    if state["ExitCode"] != 0 or state.get("OOMKilled"):
        raise ImagesError(f"{name} exited {state['ExitCode']} on SIGTERM; see {log}")
    if took >= grace:
        raise ImagesError(f"{name} needed the whole grace period ({grace} s): it was killed")
    logged = log.read_text()
    if name != "gateway" and "stopping: requests in flight get" not in logged:
        raise ImagesError(f"{name} exited 0 but never said it was stopping; see {log}")
    if "requests still running" in logged:
        raise ImagesError(f"{name} cut requests short when stopping; see {log}")
    return took


def _save_log(run: Run, name: str) -> Path:
    path = run.logs / f"{name}.log"
    done = podman("logs", run.container(name), check=False)
    path.write_text(done.stdout + done.stderr)
    return path


# --- the journey -----------------------------------------------------------------------------


def _eventually(check: Callable[[], bool], what: str, within: float = 30.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if check():
            return time.monotonic() - started
        time.sleep(0.25)
    raise ImagesError(f"journey: {what} did not happen within {within:.0f} s")


def _expect(response: httpx.Response, status: int, what: str) -> httpx.Response:
    if response.status_code != status:
        raise ImagesError(
            f"journey: {what}: {response.request.method} {response.request.url.path} answered "
            f"{response.status_code}, not {status}: {response.text[:500]}"
        )
    return response


@dataclass(frozen=True)
class Session:
    """What the journey leaves for the drain checks: a customer's and the admin's tokens."""

    customer: str
    admin: str
    product: str


def journey(gateway: str, admin: tuple[str, str]) -> tuple[list[str], Session]:
    """The README's journey through the gateway; one line per step."""
    done: list[str] = []
    customer = {
        "email": f"ada-{uuid.uuid4().hex[:8]}@example.com",
        "password": "correct horse battery staple",
        "name": "Ada",
    }
    with httpx.Client(base_url=gateway, timeout=15) as client:
        listed = _expect(
            client.get("/v1/products", params={"in_stock": "true", "limit": 1}), 200, "products"
        ).json()
        if not listed["items"]:
            raise ImagesError("journey: the seeded catalog has no product in stock")
        product = listed["items"][0]
        before = int(product["stock"])
        done.append(f"GET /v1/products: {product['name']!r} in stock ({before})")
        _expect(client.post("/v1/users", json=customer), 201, "register")
        done.append(f"POST /v1/users: {customer['email']} registered")
        token = _login(client, customer["email"], customer["password"])
        auth = {"Authorization": f"Bearer {token}"}
        done.append("POST /v1/auth/token: logged in")
        order = _expect(
            client.post(
                "/v1/orders",
                json={"lines": [{"product_id": product["id"], "quantity": 1}]},
                headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
            ),
            201,
            "order",
        ).json()
        if order["status"] != "confirmed":
            raise ImagesError(f"journey: the order is {order['status']}, not confirmed")
        done.append(f"POST /v1/orders: {order['id']} confirmed")

        def stock() -> int:
            answer = _expect(client.get(f"/v1/products/{product['id']}"), 200, "product")
            return int(answer.json()["stock"])

        waited = _eventually(lambda: stock() == before - 1, "the stock going down by 1")
        done.append(f"GET /v1/products/{{id}}: stock {before - 1} ({waited:.1f} s)")
        cancelled = _expect(
            client.post(f"/v1/orders/{order['id']}/cancel", headers=auth), 200, "cancel"
        ).json()
        if cancelled["status"] != "cancelled":
            raise ImagesError(f"journey: the cancelled order is {cancelled['status']}")
        done.append("POST /v1/orders/{id}/cancel: cancelled")
        waited = _eventually(lambda: stock() == before, "the stock coming back")

        def released() -> bool:
            answer = _expect(client.get(f"/v1/orders/{order['id']}", headers=auth), 200, "order")
            return bool(answer.json()["stock_released"])

        _eventually(released, "the order saying its stock was released")
        done.append(f"stock back to {before} through the events ({waited:.1f} s)")
        mine = _expect(client.get("/v1/orders", headers=auth), 200, "my orders").json()
        if [o["id"] for o in mine["items"]] != [order["id"]]:
            raise ImagesError("journey: GET /v1/orders does not list exactly the order")
        done.append("GET /v1/orders: the one order, cancelled")
        admin_token = _login(client, *admin)
        done.append("POST /v1/auth/token: an admin token")
    return done, Session(token, admin_token, product["id"])


def _login(client: httpx.Client, email: str, password: str) -> str:
    answer = client.post(
        "/v1/auth/token", data={"grant_type": "password", "username": email, "password": password}
    )
    return str(_expect(answer, 200, f"log in as {email}").json()["access_token"])


@contextmanager
def _step(what: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    say(f"{what} ({time.monotonic() - started:.1f} s)")


def test(images: list[Deployable]) -> None:
    """The whole images-test; ImagesError when any check fails (everything is cleaned up)."""
    by_name = {image.name: image for image in images}
    missing = [name for name in ORDER if name not in by_name]
    if missing:
        raise ImagesError(f"images-test needs all four images; no Dockerfile for {missing}")
    for name in ORDER:
        if podman("image", "exists", by_name[name].image, check=False).returncode != 0:
            raise ImagesError(f"{by_name[name].image} is not built: `make images` first")
    run = Run()
    run.logs.mkdir(parents=True, exist_ok=True)
    say(f"run {run.id}: ports {', '.join(f'{n} {p}' for n, p in run.ports.items())}")
    started: list[str] = []
    try:
        with _step("databases' roles, vhost, user and Redis prefix made"):
            env_files = provision(run, [n for n in ORDER if by_name[n].has_migrations])
        for name in ORDER:
            if by_name[name].has_migrations:
                took = migrate(run, by_name[name], env_files[name])
                steps = "create-db, migrate, topology" + (", seed" if name == "catalog" else "")
                say(f"{name}: {steps} from the image ({took:.1f} s)")
        for name in ORDER:
            took = start(run, by_name[name], env_files[name])
            started.append(name)
            healthcheck(run, name)
            say(f"{name}: ready on {run.url(name)} and healthy ({took:.1f} s)")
        with _step("journey through the containerised gateway done"):
            admin = (ADMIN_EMAIL, run.secrets["admin-password"])
            lines, session = journey(run.url("gateway"), admin)
            for line in lines:
                say(f"  {line}")
        for name in reversed(ORDER):
            request = in_flight(run, name, session)
            took = stop(run, name, request)
            started.remove(name)
            say(
                f"{name}: SIGTERM with {request.method} {request.path} in flight: answered "
                f"{request.status}, drained, exited 0 ({took:.1f} s)"
            )
    finally:
        for name in started:
            _save_log(run, name)
        release(run)
        say(f"run {run.id}: containers, databases, roles, vhost, user and keys removed")
