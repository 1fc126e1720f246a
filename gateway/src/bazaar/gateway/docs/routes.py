"""``/openapi.json`` and ``/docs``: the merged document and Swagger UI, served with no CDN.

- ``GET /openapi.json``: the aggregator's merged document, ``Cache-Control: no-cache`` with a
  strong ``ETag`` (``If-None-Match`` → 304).
- ``GET /docs``: a small HTML page with no inline script or style and no absolute URL, under a
  strict ``Content-Security-Policy`` (scripts only from this origin). It loads Swagger UI's
  files and ``init.js`` from ``/docs/static/`` with a ``?v=<content hash>`` so that they can
  be cached for a year and still change with the installed ``swagger-ui-py``.
- ``GET /docs/static/{name}``: only the files of :data:`ASSETS` (read once, from the
  ``swagger_ui`` package), and ``init.js``; anything else, ``..`` included, is 404. Gzipped
  when the client accepts it.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import html
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web

from bazaar.gateway.docs.aggregator import OpenApiAggregator

__all__ = ["ASSETS", "DOCS_CSP", "docs_routes"]

#: The Swagger UI files the page needs, from ``swagger_ui/static``, and their media types.
ASSETS: Mapping[str, str] = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}

#: Swagger UI sets element styles from script (React ``style`` props), hence style-src's
#: 'unsafe-inline'; scripts, requests and images stay on this origin.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_OPENAPI_PATH = "/openapi.json"
_STATIC = "/docs/static"
_IMMUTABLE = "public, max-age=31536000, immutable"

# deepLinking keeps the open operation in the URL's fragment; validatorUrl null: no call to
# the public validator; BaseLayout: no top bar (it would offer to load any URL).
_INIT_JS = """\
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  validatorUrl: null,
  queryConfigEnabled: false,
  displayRequestDuration: true,
  docExpansion: "list",
  defaultModelsExpandDepth: 0,
});
"""

_PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/png" sizes="32x32" href="{favicon32}">
<link rel="icon" type="image/png" sizes="16x16" href="{favicon16}">
<link rel="stylesheet" href="{css}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{bundle}" defer></script>
<script src="{init}" defer></script>
</body>
</html>
"""


@dataclass(frozen=True)
class _Asset:
    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, content_type: str) -> _Asset:
        digest = hashlib.sha256(body).hexdigest()[:32]
        gzipped = None
        if not content_type.startswith("image/"):
            packed = gzip.compress(body, compresslevel=6, mtime=0)
            gzipped = packed if len(packed) < len(body) else None
        return cls(body, gzipped, content_type, f'"{digest}"')

    @property
    def version(self) -> str:
        return self.etag.strip('"')[:16]


@functools.cache
def _load_assets() -> Mapping[str, _Asset]:
    """Read (and gzip) once per process: the files are pinned by the installed package."""
    static = resources.files("swagger_ui").joinpath("static")
    assets: dict[str, _Asset] = {
        name: _Asset.of(static.joinpath(name).read_bytes(), content_type)
        for name, content_type in ASSETS.items()
    }
    assets["init.js"] = _Asset.of(_INIT_JS.encode(), "text/javascript; charset=utf-8")
    return assets


def _accepts_gzip(request: web.Request) -> bool:
    for item in request.headers.get("Accept-Encoding", "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        q = params.strip().lower()
        return not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


def _not_modified(request: web.Request, etag: str) -> bool:
    tags = request.headers.get("If-None-Match")
    if tags is None:
        return False
    return tags.strip() == "*" or etag in (t.strip().removeprefix("W/") for t in tags.split(","))


def docs_routes(aggregator: OpenApiAggregator) -> list[web.RouteDef]:
    """The routes of ``/openapi.json``, ``/docs`` and ``/docs/static/{name}``."""
    assets = _load_assets()

    def url(name: str) -> str:
        return f"{_STATIC}/{name}?v={assets[name].version}"

    page = _PAGE.format(
        title=html.escape(f"{aggregator.title} — API docs"),
        favicon32=html.escape(url("favicon-32x32.png")),
        favicon16=html.escape(url("favicon-16x16.png")),
        css=html.escape(url("swagger-ui.css")),
        bundle=html.escape(url("swagger-ui-bundle.js")),
        init=html.escape(url("init.js")),
    ).encode()

    rendered: dict[int, tuple[dict[str, Any], bytes, str]] = {}

    async def openapi_json(request: web.Request) -> web.StreamResponse:
        doc = await aggregator.document()
        memo = rendered.get(id(doc))
        if memo is None or memo[0] is not doc:
            body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
            memo = (doc, body, f'"{hashlib.sha256(body).hexdigest()[:32]}"')
            rendered.clear()
            rendered[id(doc)] = memo
        _, body, etag = memo
        headers = {"Cache-Control": "no-cache", "ETag": etag, "X-Content-Type-Options": "nosniff"}
        if _not_modified(request, etag):
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def docs_page(_request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=page,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Cache-Control": "no-cache",
                "Content-Security-Policy": DOCS_CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    async def static_file(request: web.Request) -> web.StreamResponse:
        asset = assets.get(request.match_info["name"])
        if asset is None:
            raise web.HTTPNotFound()
        use_gzip = asset.gzipped is not None and _accepts_gzip(request)
        etag = f'"{asset.etag.strip(chr(34))}-gz"' if use_gzip else asset.etag
        headers = {
            "Cache-Control": _IMMUTABLE,
            "ETag": etag,
            "X-Content-Type-Options": "nosniff",
            "Cross-Origin-Resource-Policy": "same-origin",
        }
        if asset.gzipped is not None:
            headers["Vary"] = "Accept-Encoding"
        if _not_modified(request, etag):
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = asset.content_type
        if use_gzip:
            headers["Content-Encoding"] = "gzip"
            assert asset.gzipped is not None
            return web.Response(body=asset.gzipped, headers=headers)
        return web.Response(body=asset.body, headers=headers)

    return [
        web.get(_OPENAPI_PATH, openapi_json, name="openapi-json"),
        web.get("/docs", docs_page, name="docs"),
        web.get(_STATIC + "/{name}", static_file, name="docs-static"),
    ]
