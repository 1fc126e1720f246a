"""The floor for the gateway benchmark: the least an aiohttp reverse proxy can do.

One pooled ClientSession, the body read whole, status and body relayed; no routing, no
headers work, no limits. `python bench/minimal_proxy.py PORT UPSTREAM_URL`.
"""

from __future__ import annotations

import sys

import aiohttp
import uvloop
from aiohttp import web


def main() -> None:
    """Serve on PORT, forwarding everything to UPSTREAM_URL."""
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def forward(request: web.Request) -> web.Response:
        session = request.app[session_key]
        async with session.request(request.method, upstream + request.path_qs) as answer:
            body = await answer.read()
            return web.Response(status=answer.status, body=body, content_type=answer.content_type)

    async def start(app: web.Application) -> None:
        app[session_key] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))

    async def stop(app: web.Application) -> None:
        await app[session_key].close()

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", forward)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
