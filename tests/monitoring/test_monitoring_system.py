"""The running suite under a real Prometheus: targets, recording rules, alerts, dashboards, UI.

Auth, catalog, orders and the gateway serve on 127.0.0.1 sockets as in the other system
tests (tests/test_orders_through_gateway.py), with events through this run's RabbitMQ vhost
and the gateway's limits in Redis. Debian's Prometheus is started the way `make up` starts it
(the program scripts/bazaar_suite.py describes), scraping them every second with every rule
of deploy/monitoring/prometheus/rules evaluated every second (a group's own `interval` is
dropped in the test's copy). Traffic goes through the gateway; then catalog stops.

Needs /usr/bin/prometheus: scripts/ensure-prometheus.sh installs it (`make test` runs it);
the tests skip only when it is missing and cannot be installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from bazaar.auth.app import create_app as create_auth
from bazaar.auth.config import AuthSettings, ClientConfig
from bazaar.catalog.app import create_app as create_catalog
from bazaar.catalog.config import CatalogSettings
from bazaar.gateway.app import create_app as create_gateway
from bazaar.gateway.config import DEFAULT_ROUTES, GatewaySettings, UpstreamConfig
from bazaar.gateway.edge import EdgeRunner
from bazaar.orders.app import create_app as create_orders
from bazaar.orders.config import OrdersSettings
from bazaar.shared.testing.infrastructure import Resolved
from bazaar.shared.testing.server import free_port, serve_on_socket

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "monitoring" / "prometheus" / "rules"
DASHBOARDS = REPO / "deploy" / "monitoring" / "dashboards"
PROMETHEUS = Path("/usr/bin/prometheus")
CHROMIUM = Path("/usr/bin/chromium")
ISSUER = "http://gateway.monitoring-system.test"
ADMIN = ("admin@monitoring-system.test", "monitoring-system-admin-password")
ORDERS_SECRET = "monitoring-system-client-secret"
CUSTOMER = {"email": "mo@monitoring-system.test", "password": "mos long password", "name": "Mo"}
#: A deprecated route (the JWKS), so the deprecated-use counter has a series to show.
SUNSET = "Sat, 01 Jan 2028 00:00:00 GMT"
#: Grafana's variables as the test substitutes them (every process; a window of many scrapes).
VARIABLES = {"$__rate_interval": "1m", "$job": ".+", "${job}": ".+"}
#: Counters of failures that only a failure creates (a labelled child appears on the first
#: one): a dashboard query over them alone may be empty on this suite, as long as every
#: metric it names is declared by a target (so a misspelt name still fails).
FAILURE_ONLY = {
    "bazaar_events_publish_failures_total",
    "bazaar_events_retried_total",
    "bazaar_events_parked_total",
}

Gateway = TestClient[web.Request, web.Application]


class _EdgeServer(TestServer):
    """The gateway served as `bazaar-gateway serve` serves it (through its EdgeRunner)."""

    async def _make_runner(self, **kwargs: Any) -> EdgeRunner:
        return EdgeRunner(self.app, **kwargs)


# --- Prometheus, as make up starts it ---------------------------------------------------------


def _prometheus_binary() -> Path:
    """Debian's prometheus, installed by scripts/ensure-prometheus.sh when missing."""
    ensure = REPO / "scripts" / "ensure-prometheus.sh"
    if not PROMETHEUS.is_file() and ensure.is_file():
        subprocess.run(["bash", str(ensure)], capture_output=True, check=False, timeout=300)
    if not PROMETHEUS.is_file():
        pytest.skip(f"{PROMETHEUS} is missing and could not be installed (ensure-prometheus.sh)")
    return PROMETHEUS


def _bazaar_suite() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bazaar_suite", REPO / "scripts" / "bazaar_suite.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _make_up_suite(run_dir: Path, port: int, monitoring: str | None = None) -> dict[str, Any]:
    """make up's suite for a run directory, Prometheus on `port`."""
    module = _bazaar_suite()
    with pytest.MonkeyPatch.context() as patch:
        for name in (*module.DEV_DEFAULTS, "MONITORING"):
            # build() exports its defaults to os.environ: restored when the context ends.
            patch.setenv(name, os.environ.get(name, "unset"))
            patch.delenv(name)
        patch.setenv("PROMETHEUS_PORT", str(port))
        if monitoring is not None:
            patch.setenv("MONITORING", monitoring)
        suite: dict[str, Any] = module.build(run_dir)
    return suite


def _make_up_program(run_dir: Path, port: int) -> dict[str, Any]:
    """The Prometheus program of make up's suite, for a run directory and a port."""
    suite = _make_up_suite(run_dir, port)
    (program,) = [p for p in suite["programs"] if p["name"] == "prometheus"]
    assert f"  metrics   http://localhost:{port}  (Prometheus" in suite["banner"]
    return dict(program)


def _rules_evaluated_every_second(folder: Path) -> None:
    """Copy the rule files, dropping each group's own evaluation interval."""
    for path in sorted(RULES.glob("*.yml")):
        rules = yaml.safe_load(path.read_text())
        for group in rules["groups"]:
            group.pop("interval", None)
        (folder / path.name).write_text(yaml.safe_dump(rules, sort_keys=False))


def _configure(program: dict[str, Any], targets: dict[str, str], rules: Path) -> None:
    """Rewrite the file make up's program reads: this suite's ports, every second."""
    rules.mkdir()
    _rules_evaluated_every_second(rules)
    config = _bazaar_suite().prometheus_config(targets, rules=rules, interval="1s")
    config_file = next(a for a in program["argv"] if a.startswith("--config.file="))
    Path(config_file.split("=", 1)[1]).write_text(yaml.safe_dump(config))


def _rule_files() -> list[dict[str, Any]]:
    return [r for path in sorted(RULES.glob("*.yml")) for r in _rules_of(path)]


def _rules_of(path: Path) -> list[dict[str, Any]]:
    return [rule for g in yaml.safe_load(path.read_text())["groups"] for rule in g["rules"]]


@dataclass
class Monitored:
    """The suite, its Prometheus and what the test learnt while driving it."""

    gateway: Gateway
    prometheus: str  # http://127.0.0.1:PORT
    session: aiohttp.ClientSession
    stop_catalog: Callable[[], Awaitable[None]]
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    product: dict[str, Any] = field(default_factory=dict)

    async def api(self, path: str, **params: str) -> Any:
        """One answer of Prometheus's HTTP API (its `data`)."""
        async with self.session.get(f"{self.prometheus}{path}", params=params) as answer:
            body = await answer.json()
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's series (a scalar answer counts as one)."""
        data = await self.api("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = (
            data["result"] if data["resultType"] in ("vector", "matrix") else [data]
        )
        return result

    async def alerts(self) -> list[dict[str, Any]]:
        """The alerts pending or firing now."""
        alerts: list[dict[str, Any]] = (await self.api("/api/v1/alerts"))["alerts"]
        return alerts

    async def declared(self, metric: str) -> bool:
        """Whether a target declared the metric (HELP/TYPE seen), samples or not."""
        for name in {metric, metric.removesuffix("_total")}:
            found = await self.api("/api/v1/targets/metadata", metric=name)
            if found:
                return True
        return False


async def _until(
    check: Callable[[], Awaitable[bool]], *, within: float, every: float = 0.5
) -> bool:
    deadline = time.monotonic() + within
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)


@contextlib.contextmanager
def _running(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


# --- the suite --------------------------------------------------------------------------------


async def _suite(
    stack: AsyncExitStack, databases: dict[str, str], amqp_url: str, redis: tuple[str, str]
) -> tuple[Gateway, dict[str, str], Callable[[], Awaitable[None]]]:
    """Auth, catalog, orders on sockets, the gateway in front; catalog can be stopped alone."""
    common: dict[str, Any] = {
        "_env_file": None,
        "environment": "test",
        "jwt_issuer": ISSUER,
        "amqp_url": amqp_url,
        "outbox_poll_seconds": 0.2,
    }
    auth_url = await stack.enter_async_context(
        serve_on_socket(
            create_auth(
                AuthSettings(
                    **common,
                    database_url=databases["auth"],
                    admin_email=ADMIN[0],
                    admin_password=SecretStr(ADMIN[1]),
                    clients=(
                        ClientConfig(
                            client_id="orders",
                            secret=SecretStr(ORDERS_SECRET),
                            scopes=("catalog:reserve",),
                        ),
                    ),
                )
            )
        )
    )
    jwks = {"jwt_jwks_url": f"{auth_url}/.well-known/jwks.json"}
    catalog_stack = AsyncExitStack()
    stack.push_async_callback(catalog_stack.aclose)
    catalog_url = await catalog_stack.enter_async_context(
        serve_on_socket(
            create_catalog(CatalogSettings(**common, **jwks, database_url=databases["catalog"]))
        )
    )
    orders_url = await stack.enter_async_context(
        serve_on_socket(
            create_orders(
                OrdersSettings(
                    **common,
                    **jwks,
                    database_url=databases["orders"],
                    catalog_url=catalog_url,
                    auth_url=auth_url,
                    client_secret=SecretStr(ORDERS_SECRET),
                )
            )
        )
    )
    routes = tuple(
        r.model_copy(update={"deprecated_sunset": SUNSET}) if r.prefix == "/.well-known/" else r
        for r in DEFAULT_ROUTES
    )
    settings = GatewaySettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        jwt_issuer=ISSUER,
        jwt_jwks_url=jwks["jwt_jwks_url"],
        redis_url=redis[0],
        redis_prefix=f"{redis[1]}monitoring:",
        # Not the deployed default ("bazaar:cache:"): the run's keys only, deleted after it.
        cache_redis_prefix=f"{redis[1]}monitoring:cache:",
        routes=routes,
        upstreams={
            "auth": UpstreamConfig(url=auth_url),
            "catalog": UpstreamConfig(url=catalog_url),
            "orders": UpstreamConfig(url=orders_url),
        },
    )
    gateway: Gateway = TestClient(_EdgeServer(create_gateway(settings), host="127.0.0.1"))
    await gateway.start_server()
    stack.push_async_callback(gateway.close)
    where = {
        "gateway": f"127.0.0.1:{gateway.server.port}",
        "auth": auth_url.removeprefix("http://"),
        "catalog": catalog_url.removeprefix("http://"),
        "orders": orders_url.removeprefix("http://"),
    }
    return gateway, where, catalog_stack.aclose


async def _login(gateway: Gateway, email: str, password: str) -> dict[str, str]:
    response = await gateway.post(
        "/v1/auth/token", data={"grant_type": "password", "username": email, "password": password}
    )
    assert response.status == 200, await response.text()
    return {"Authorization": f"Bearer {(await response.json())['access_token']}"}


async def _order(m: Monitored, quantity: int) -> aiohttp.ClientResponse:
    body = {"lines": [{"product_id": m.product["id"], "quantity": quantity}]}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    response: aiohttp.ClientResponse = await m.gateway.post(
        "/v1/orders", json=body, headers={**m.headers["customer"], **key}
    )
    return response


async def _traffic(m: Monitored) -> None:
    """What a healthy day brings: sign-up, log-ins, browsing, orders, a cancel, a refusal."""
    gateway = m.gateway
    m.headers["admin"] = await _login(gateway, *ADMIN)
    created = await gateway.post(
        "/v1/products",
        json={"sku": "MON-1", "name": "Gauge", "price_cents": 990, "currency": "EUR", "stock": 40},
        headers=m.headers["admin"],
    )
    assert created.status == 201, await created.text()
    m.product = await created.json()
    registered = await gateway.post("/v1/users", json=CUSTOMER)
    assert registered.status == 201, await registered.text()
    m.headers["customer"] = await _login(gateway, CUSTOMER["email"], CUSTOMER["password"])
    for _ in range(5):
        assert (await gateway.get("/v1/products")).status == 200
        assert (await gateway.get(f"/v1/products/{m.product['id']}")).status == 200
    assert (await gateway.get("/.well-known/jwks.json")).status == 200  # deprecated here
    assert (await gateway.get("/v1/nowhere")).status == 404
    confirmed = [await _order(m, 1) for _ in range(3)]
    assert [r.status for r in confirmed] == [201, 201, 201]
    assert (await _order(m, 1000)).status == 409  # not enough stock: kept as rejected
    order = await confirmed[0].json()
    cancelled = await gateway.post(
        f"/v1/orders/{order['id']}/cancel", headers=m.headers["customer"]
    )
    assert cancelled.status == 200, await cancelled.text()
    # A request the edge refuses before routing (unparsable): counted by status.
    port = gateway.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(reader.read(), 10)
    writer.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def monitored(
    system_databases: dict[str, str], amqp_url: str, redis_server: Resolved, redis_prefix: str
) -> AsyncIterator[Monitored]:
    """The suite with traffic sent, scraped by make up's Prometheus every second."""
    binary = _prometheus_binary()
    with tempfile.TemporaryDirectory(prefix="bazaar-monitoring-") as tmp:
        run_dir = Path(tmp)
        port = free_port()
        program = _make_up_program(run_dir, port)
        assert Path(program["argv"][0]).resolve() == binary.resolve()  # noqa: ASYNC240
        async with AsyncExitStack() as stack, aiohttp.ClientSession() as session:
            gateway, where, stop_catalog = await _suite(
                stack, system_databases, amqp_url, (redis_server.url, redis_prefix)
            )
            _configure(program, {**where, "prometheus": f"127.0.0.1:{port}"}, run_dir / "rules")
            log = run_dir / "prometheus.log"
            with _running(program["argv"], log) as process:
                url = f"http://127.0.0.1:{port}"
                m = Monitored(gateway, url, session, stop_catalog)

                async def ready() -> bool:
                    assert process.poll() is None, log.read_text()[-3000:]
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(program["ready_url"]) as answer:
                            return answer.status == 200
                    return False

                assert await _until(ready, within=60), log.read_text()[-3000:]
                await _traffic(m)
                yield m


# --- make up ----------------------------------------------------------------------------------


def test_make_up_with_monitoring_0_runs_no_prometheus(tmp_path: Path) -> None:
    suite = _make_up_suite(tmp_path, free_port(), monitoring="0")
    assert [p["name"] for p in suite["programs"]] == ["auth", "catalog", "orders", "gateway"]
    assert "metrics" not in suite["banner"]
    assert not (tmp_path / "prometheus.yml").exists()


def test_make_up_leaves_prometheus_out_and_says_so_when_its_port_is_taken(
    tmp_path: Path,
) -> None:
    _prometheus_binary()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        suite = _make_up_suite(tmp_path, port)
    assert "prometheus" not in [p["name"] for p in suite["programs"]]
    assert f"127.0.0.1:{port} is taken by another process" in suite["banner"]


def test_make_ups_prometheus_scrapes_every_program_and_loads_the_rule_folder(
    tmp_path: Path,
) -> None:
    program = _make_up_program(tmp_path, free_port())
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert jobs == {
        "gateway": ["127.0.0.1:8000"],
        "auth": ["127.0.0.1:8001"],
        "catalog": ["127.0.0.1:8002"],
        "orders": ["127.0.0.1:8003"],
        "prometheus": [program["ready_url"].split("/")[2]],
    }
    assert config["rule_files"] == [str(RULES / "*.yml")]
    assert f"--storage.tsdb.path={tmp_path.resolve() / 'prometheus'}" in program["argv"]


def test_make_up_on_a_fresh_clone_writes_prometheus_config_into_a_run_dir_it_creates(
    tmp_path: Path,
) -> None:
    # A fresh clone has no .run/ yet: building the suite creates it (it crashed before, so
    # the chaos soak, which builds the suite without make up, could not start).
    run_dir = tmp_path / "fresh" / ".run"
    _make_up_program(run_dir, free_port())
    assert (run_dir / "prometheus.yml").is_file()


# --- healthy ----------------------------------------------------------------------------------


async def test_prometheus_scrapes_every_process_of_the_suite(monitored: Monitored) -> None:
    async def all_up() -> bool:
        targets = (await monitored.api("/api/v1/targets"))["activeTargets"]
        return len(targets) == 5 and all(t["health"] == "up" for t in targets)

    assert await _until(all_up, within=20)
    targets = (await monitored.api("/api/v1/targets"))["activeTargets"]
    assert sorted(t["labels"]["job"] for t in targets) == [
        "auth",
        "catalog",
        "gateway",
        "orders",
        "prometheus",
    ]
    # Every process says who it is.
    built = await monitored.query("bazaar_build_info")
    assert {s["metric"]["job"] for s in built} == {"auth", "catalog", "gateway", "orders"}


async def test_prometheus_loaded_every_rule_file(monitored: Monitored) -> None:
    groups = (await monitored.api("/api/v1/rules"))["groups"]
    loaded = {r["name"] for g in groups for r in g["rules"]}
    expected = {r.get("record") or r.get("alert") for r in _rule_files()}
    assert expected and loaded == expected
    broken = [(r["name"], r["lastError"]) for g in groups for r in g["rules"] if r.get("lastError")]
    assert broken == []


async def test_every_recording_rule_returns_data_once_traffic_was_sent(
    monitored: Monitored,
) -> None:
    records = sorted({r["record"] for r in _rule_files() if "record" in r})
    assert records, "no recording rule in deploy/monitoring/prometheus/rules"
    empty: list[str] = list(records)

    async def all_recorded() -> bool:
        empty[:] = [name for name in records if not await monitored.query(name)]
        return not empty

    assert await _until(all_recorded, within=45, every=1), f"no data: {empty}"


async def test_no_alert_is_pending_or_firing_on_the_healthy_suite(monitored: Monitored) -> None:
    # Pending is an alert whose condition holds and that would fire once its `for` passed:
    # on a healthy suite none may be. Give every rule a few evaluations over fresh scrapes.
    await asyncio.sleep(5)
    alerts = await monitored.alerts()
    assert [(a["labels"]["alertname"], a["state"], a["labels"]) for a in alerts] == []


# --- the Prometheus UI in a browser ------------------------------------------------------------


async def _chromium(url: str, screenshot: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="bazaar-chromium-") as profile:
        argv = [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",  # we run as root
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            "--virtual-time-budget=15000",
        ]
        outputs = []
        for extra in (["--dump-dom"], [f"--screenshot={screenshot}"]):
            proc = await asyncio.create_subprocess_exec(
                *argv, *extra, url,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )  # fmt: skip
            try:
                out, err = await asyncio.wait_for(proc.communicate(), 90)
            except TimeoutError:
                raise AssertionError(f"chromium did not finish {extra} within 90 s") from None
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
            outputs.append(out.decode(errors="replace"))
    return outputs[0]


@pytest.mark.slow
async def test_the_prometheus_ui_graphs_the_gateways_request_rate_in_chromium(
    monitored: Monitored, tmp_path: Path
) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure-chromium.sh (as root)")
    expr = 'sum(rate(http_server_request_duration_seconds_count{job="gateway"}[1m]))'
    assert await monitored.query(expr), "no gateway request rate to graph"
    query = urllib.parse.urlencode(
        {"g0.expr": expr, "g0.tab": "0", "g0.range_input": "1m", "g0.stacked": "0"}
    )
    screenshot = tmp_path / "prometheus-graph.png"
    dom = await _chromium(f"{monitored.prometheus}/graph?{query}", screenshot)
    shown = Path(os.environ.get("BAZAAR_SCREENSHOTS", tmp_path)) / screenshot.name
    if shown != screenshot:
        shutil.copyfile(screenshot, shown)
    assert "http_server_request_duration_seconds_count" in dom  # the expression, in its box
    assert re.search(r"Total time series: 1\b", dom), dom[-3000:]
    assert '<div class="graph rickshaw_graph">' in dom
    # Rickshaw drew the series: a line through many points of the last minute.
    lines = re.findall(r'<path class="path" d="M([^"]+)"', dom)
    assert lines and max(line.count("L") for line in lines) >= 5, lines
    assert screenshot.stat().st_size > 10_000


# --- catalog stops ------------------------------------------------------------------------------


def _alert_names(pattern: str) -> set[str]:
    """The alerts whose expression matches (names are the rule files' business)."""
    return {r["alert"] for r in _rule_files() if "alert" in r and re.search(pattern, r["expr"])}


async def test_stopping_catalog_turns_its_alerts_pending_and_every_dashboard_query_answers(
    monitored: Monitored,
) -> None:
    await monitored.stop_catalog()
    breaker = _alert_names(r"bazaar_circuit_breaker_state")
    down = _alert_names(r"\bup\{[^}]*\}\s*==\s*0")
    assert breaker and down, "no breaker or target-down alert in the rule files"
    # Clients keep asking: the gateway's breaker towards catalog opens on the failures, and
    # orders accepts an order it cannot reserve yet (202 pending). Past the gateway's
    # response cache (no-cache), so every read goes to catalog.
    fresh = {"Cache-Control": "no-cache"}
    statuses = [
        (await monitored.gateway.get("/v1/products", headers=fresh)).status for _ in range(40)
    ]
    assert set(statuses) <= {502, 503, 504}, statuses
    assert (await _order(monitored, 1)).status == 202

    seen: dict[str, set[str]] = {}

    async def pending() -> bool:
        await monitored.gateway.get("/v1/products", headers=fresh)  # a trial now and then
        seen.clear()
        for alert in await monitored.alerts():
            labels = alert["labels"]
            if "catalog" in (labels.get("job"), labels.get("dependency")):
                seen.setdefault(labels["alertname"], set()).add(alert["state"])
        return bool(breaker & set(seen)) and bool(down & set(seen))

    assert await _until(pending, within=30, every=1), seen
    assert all(states <= {"pending", "firing"} for states in seen.values())

    # Every query of every dashboard answers from this Prometheus, variables substituted.
    empty: list[str] = []

    async def all_answer() -> bool:
        empty[:] = [q async for q in _unanswered(monitored)]
        return not empty

    assert await _until(all_answer, within=30, every=2), "\n".join(empty)


async def _unanswered(monitored: Monitored) -> AsyncIterator[str]:
    """The dashboards' queries with no series (unless only a failure would create one)."""
    for board in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(board.read_text())["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in VARIABLES.items():
                    expr = expr.replace(variable, value)
                if await monitored.query(expr):
                    continue
                rare = set(re.findall(r"\b[a-z_:]+(?=[{\[])", expr)) & FAILURE_ONLY
                if not rare or not all([await monitored.declared(n) for n in rare]):
                    yield f"{board.name}: {panel['title']}: {expr}"
