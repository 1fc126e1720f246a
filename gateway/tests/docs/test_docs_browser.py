"""/openapi.json, /docs and its assets over HTTP, then /docs rendered in Debian's Chromium.

The browser test needs /usr/bin/chromium: ``scripts/ensure-chromium.sh`` installs it (the
Makefile's test target runs it). It fails, never skips, when Chromium is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import re
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bazaar.gateway.docs import OpenApiAggregator, docs_routes
from bazaar.gateway.docs.merge import HTTP_METHODS

REPO = Path(__file__).resolve().parents[3]
CONTRACTS = REPO / "contracts" / "openapi"
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_TIMEOUT = 90.0
ABSOLUTE_URL = re.compile(r"(?i)\b(?:https?:)?//[a-z0-9]")


def contracts() -> dict[str, dict[str, Any]]:
    return {
        name: json.loads((CONTRACTS / f"{name}.json").read_text("utf-8"))
        for name in ("auth", "catalog")
    }


@dataclass
class Docs:
    """The docs routes served on 127.0.0.1 over an aggregator of the committed contracts."""

    client: TestClient[web.Request, web.Application]
    aggregator: OpenApiAggregator
    requested: list[str]

    @property
    def port(self) -> int:
        port = self.client.server.port
        assert port is not None
        return port


@pytest_asyncio.fixture
async def docs() -> AsyncIterator[Docs]:
    documents = contracts()

    async def serve_contract(request: web.Request) -> web.Response:
        return web.json_response(documents[request.match_info["service"]])

    upstream_app = web.Application()
    upstream_app.router.add_get("/{service}/openapi.json", serve_contract)
    requested: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        requested.append(request.path)
        response: web.StreamResponse = await handler(request)
        return response

    async with (
        TestServer(upstream_app, host="127.0.0.1", port=0) as upstream,
        aiohttp.ClientSession() as session,
    ):
        aggregator = OpenApiAggregator(
            session,
            {name: str(upstream.make_url(f"/{name}/openapi.json")) for name in documents},
            title="Bazaar",
            version="0.1.0",
        )
        app = web.Application(middlewares=[record])
        app.add_routes(docs_routes(aggregator))
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            yield Docs(client, aggregator, requested)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data


def parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    return parser


def public_operations() -> set[tuple[str, str]]:
    return {
        (method, path)
        for doc in contracts().values()
        for path, item in doc["paths"].items()
        if not path.startswith("/v1/reservations")
        for method in item
        if method in HTTP_METHODS
    }


# --- over HTTP -----------------------------------------------------------------------------


async def test_openapi_json_is_the_merged_document(docs: Docs) -> None:
    response = await docs.client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-cache"
    body = await response.json()
    assert body == await docs.aggregator.document()
    assert {(m, p) for p, item in body["paths"].items() for m in item} == public_operations()

    etag = response.headers["ETag"]
    again = await docs.client.get("/openapi.json", headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""


async def test_docs_page_loads_only_local_assets(docs: Docs) -> None:
    response = await docs.client.get("/docs")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.charset == "utf-8"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe-eval" not in csp
    assert "connect-src 'self'" in csp
    html = await response.text()

    assert not ABSOLUTE_URL.search(html), "an absolute URL in /docs"
    assert "http://" not in html and "https://" not in html
    page = parse(html)
    assert page.script_text.strip() == "", "no inline script"
    assert "<style" not in html and "style=" not in html, "no inline style"

    urls = [a.get("src") or a.get("href") for tag, a in page.tags if tag in ("script", "link")]
    assert urls and all(u and u.startswith("/docs/static/") for u in urls)
    names = {u.split("?")[0].removeprefix("/docs/static/") for u in urls if u}
    assert {"swagger-ui.css", "swagger-ui-bundle.js", "init.js"} <= names
    for url in urls:
        assert url is not None
        asset = await docs.client.get(url)
        assert asset.status == 200, url

    init = await (await docs.client.get("/docs/static/init.js")).text()
    assert 'url: "/openapi.json"' in init
    assert "SwaggerUIBundle(" in init
    assert not ABSOLUTE_URL.search(init)


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("swagger-ui.css", "text/css"),
        ("swagger-ui-bundle.js", "text/javascript"),
        ("init.js", "text/javascript"),
        ("favicon-32x32.png", "image/png"),
    ],
)
async def test_assets_are_served_with_type_and_long_cache(
    docs: Docs, name: str, content_type: str
) -> None:
    response = await docs.client.get(
        f"/docs/static/{name}", headers={"Accept-Encoding": "identity"}
    )
    assert response.status == 200
    assert response.content_type == content_type
    assert "max-age=31536000" in response.headers["Cache-Control"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Encoding" not in response.headers
    body = await response.read()
    if name != "init.js":
        assert body == resources.files("swagger_ui").joinpath("static", name).read_bytes()

    again = await docs.client.get(
        f"/docs/static/{name}",
        headers={"If-None-Match": response.headers["ETag"], "Accept-Encoding": "identity"},
    )
    assert again.status == 304

    head = await docs.client.head(f"/docs/static/{name}")
    assert head.status == 200


async def test_assets_are_gzipped_for_clients_that_accept_it(docs: Docs) -> None:
    response = await docs.client.get(
        "/docs/static/swagger-ui-bundle.js",
        headers={"Accept-Encoding": "gzip, deflate"},
        auto_decompress=False,
    )
    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Vary"] == "Accept-Encoding"
    original = resources.files("swagger_ui").joinpath("static", "swagger-ui-bundle.js")
    packed = await response.read()
    assert len(packed) < len(original.read_bytes()) / 2
    assert gzip.decompress(packed) == original.read_bytes()


@pytest.mark.parametrize(
    "name",
    [
        "swagger-initializer.js",  # in the package, not on the allow-list
        "oauth2-redirect.html",
        "swagger-ui-bundle.js.map",
        "LICENSE",
        "nope.js",
        "SWAGGER-UI.CSS",
        "swagger-ui.css.",
        "..",
        "%2e%2e",
    ],
)
async def test_unknown_assets_are_404(docs: Docs, name: str) -> None:
    response = await docs.client.get(f"/docs/static/{name}")
    assert response.status == 404


async def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET ``target`` byte for byte (a client library would normalise the ``..``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    status = int(answer.split(b" ", 2)[1])
    return status, answer


@pytest.mark.parametrize(
    "target",
    [
        "/docs/static/../../etc/passwd",
        "/docs/static/../../../../../../etc/passwd",
        "/docs/static/%2e%2e/%2e%2e/etc/passwd",
        "/docs/static/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/docs/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/docs/static/%2E%2E%2F__init__.py",
        "/docs/static/..%5c__init__.py",
        "/docs/static/swagger-ui.css/../../../etc/passwd",
        "/docs/static//etc/passwd",
        "/docs/static/%00swagger-ui.css",
    ],
)
async def test_path_traversal_is_404(docs: Docs, target: str) -> None:
    status, answer = await raw_get(docs.port, target)
    assert status == 404, answer[:200]
    assert b"root:" not in answer
    assert b"import" not in answer


# --- in a real browser ---------------------------------------------------------------------


def chromium_installed() -> bool:
    return CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)


def chromium_command(user_data_dir: str, url: str) -> list[str]:
    return [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",  # we run as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_data_dir}",
        "--virtual-time-budget=10000",
        "--enable-logging=stderr",  # console messages (CSP violations, errors) on stderr
        "--v=0",
        "--dump-dom",
        url,
    ]


async def run_chromium(url: str) -> tuple[str, str, float]:
    with tempfile.TemporaryDirectory(prefix="bazaar-chromium-") as user_data_dir:
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *chromium_command(user_data_dir, url),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its helpers share its process group: killed together
        )
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), BROWSER_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT:.0f} s")
        elapsed = time.perf_counter() - started
        # Helpers still alive after the browser exited are ours to end.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    err = stderr.decode(errors="replace")
    assert proc.returncode == 0, f"chromium exited {proc.returncode}:\n{err[-3000:]}"
    return stdout.decode(errors="replace"), err, elapsed


@pytest.mark.slow
async def test_docs_render_in_headless_chromium_from_local_assets(docs: Docs) -> None:
    if not chromium_installed():
        pytest.fail(
            f"{CHROMIUM} is missing: the /docs browser test needs Debian's Chromium. "
            "Run scripts/ensure-chromium.sh (as root) to install it."
        )
    dom, console, elapsed = await run_chromium(f"http://127.0.0.1:{docs.port}/docs")
    print(f"chromium rendered /docs in {elapsed:.2f} s")  # noqa: T201 (shown with -s)

    # Swagger UI breaks long paths with zero-width spaces.
    text = dom.replace("\u200b", "").replace("&ZeroWidthSpace;", "")
    assert 'id="swagger-ui"' in text
    blocks = re.findall(r'class="opblock opblock-(get|post|put|patch|delete)\b', text)
    assert len(blocks) == len(public_operations()), (len(blocks), text[:2000])
    for path in ("/v1/products/{product_id}", "/v1/auth/token", "/v1/users/me"):
        assert f'data-path="{path}"' in text or f">{path}<" in text, path
    assert "/v1/reservations" not in text
    assert "Bazaar" in text  # the merged document's title, rendered

    # It rendered from the gateway's own files: the page, its assets and the document.
    static = {p for p in docs.requested if p.startswith("/docs/static/")}
    assert {"/docs/static/swagger-ui-bundle.js", "/docs/static/init.js"} <= static
    assert "/docs/static/swagger-ui.css" in static
    assert "/openapi.json" in docs.requested

    # No CSP violation (so nothing tried to load from elsewhere) and no script error.
    console_lines = [line for line in console.splitlines() if ":CONSOLE" in line]
    assert not [line for line in console_lines if "Content Security Policy" in line], console_lines
    assert not [line for line in console_lines if "Uncaught" in line], console_lines
