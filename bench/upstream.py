"""A trivial, fast upstream for the gateway benchmark: any path answers a small JSON body."""

from __future__ import annotations

import sys

from aiohttp import web

BODY = b'{"id":"3fa85f64-5717-4562-b3fc-2c963f66afa6","name":"bench","price_cents":100}'


async def answer(_request: web.Request) -> web.Response:
    """Answer every request the same way, at once."""
    return web.Response(body=BODY, content_type="application/json")


def main() -> None:
    """Serve on the port given as the only argument."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
