"""The command line every service offers: create-db, migrate, topology, seed, serve, parked…"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop
from fastapi import FastAPI
from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.embed import Server as Granian
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bazaar.shared import migrations
from bazaar.shared.dbadmin import ensure_database
from bazaar.shared.logging import configure_logging
from bazaar.shared.messaging.operator import (
    configure_parked,
    configure_topology,
    run_parked,
    run_topology,
)
from bazaar.shared.messaging.runtime import messaging_settings
from bazaar.shared.middleware import RequestsInFlight
from bazaar.shared.settings import ServiceSettings, settings_dump
from bazaar.shared.stopping import stop_notice

#: Seconds in-flight requests get to finish after SIGTERM before the server exits.
GRACEFUL_SHUTDOWN_SECONDS = 20
#: Connections waiting to be accepted (uvicorn's default; the kernel caps it at somaxconn).
LISTEN_BACKLOG = 2048
#: An idle keep-alive connection is closed after this long (as uvicorn did; the clients'
#: pools let theirs go after 2 s, so none sends on a connection being closed).
KEEP_ALIVE_SECONDS = 5

log = logging.getLogger("bazaar.serve")


@dataclass(frozen=True)
class ExtraCommand:
    """A service's own command: its arguments, and what it does with settings and arguments."""

    name: str
    help: str
    run: Callable[[Any, argparse.Namespace], int]
    configure: Callable[[argparse.ArgumentParser], None] = lambda _parser: None


@dataclass(frozen=True)
class ServiceCommands:
    """What a service plugs into the shared command line."""

    name: str
    settings: Callable[[], ServiceSettings]
    app: Callable[[Any], FastAPI]
    migrations_dir: Path
    seed: Callable[[Any], Coroutine[Any, Any, int]] | None = None
    extra: Sequence[ExtraCommand] = ()


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")


def openapi_document(app: FastAPI) -> str:
    """The app's OpenAPI document as stable, committed-friendly JSON."""
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


class _StoppedWhileStarting(Exception):
    """A signal came before the app's lifespan had finished starting."""


class _Lifespan:
    """The app's ASGI lifespan, driven here rather than by the HTTP server.

    The startup runs before granian is started at all (nothing can connect before it is
    done, whatever granian's socket handling) and can be cancelled by a signal (granian's
    own could not: the process hung); the shutdown runs after serving ended.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        #: The lifespan's state, which each request's scope gets a copy of.
        self.state: dict[str, Any] = {}
        loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._started: asyncio.Future[bool] = loop.create_future()
        self._ended: asyncio.Future[bool] = loop.create_future()
        self._task: asyncio.Task[None] | None = None

    async def _run(self, scope: Scope) -> None:
        await self.app(scope, self._events.get, self._send)

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind.startswith("lifespan.startup.") and not self._started.done():
            self._started.set_result(kind == "lifespan.startup.complete")
        elif kind.startswith("lifespan.shutdown.") and not self._ended.done():
            self._ended.set_result(kind == "lifespan.shutdown.complete")

    async def _step(self, event: str, outcome: asyncio.Future[bool]) -> None:
        """Send `event`; return once the app says it completed, else raise why it did not."""
        task = self._task
        assert task is not None  # noqa: S101 - narrows: set when the app started
        await self._events.put({"type": event})
        await asyncio.wait((outcome, task), return_when=asyncio.FIRST_COMPLETED)
        if outcome.done() and outcome.result():
            return
        await asyncio.wait((task,))  # a failure is reported, then raised by the app
        if task.cancelled():
            raise _StoppedWhileStarting
        error = task.exception()
        if error is not None:
            raise error
        raise RuntimeError(f"the app's lifespan did not complete its {event}")

    async def startup(self) -> None:
        """Run the app's startup; raise what made it fail (`_StoppedWhileStarting`)."""
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        self._task = asyncio.create_task(self._run(scope))
        await self._step("lifespan.startup", self._started)

    def stop_starting(self) -> None:
        """Cancel a startup still running (its own cleanup runs)."""
        if self._task is not None and not self._started.done():
            self._task.cancel()

    async def shutdown(self) -> None:
        """Run the app's shutdown; raise what made it fail."""
        try:
            await self._step("lifespan.shutdown", self._ended)
        finally:
            self.state.clear()


def _with_state(app: ASGIApp, state: dict[str, Any]) -> ASGIApp:
    """`app`, its requests given a copy of the lifespan's state (granian's ASGINL gives none)."""

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"] = state.copy()
        await app(scope, receive, send)

    return with_state


def _refuse_taken_address(host: str, port: int) -> None:
    """Raise OSError when a socket is already bound to `host`:`port`.

    Granian binds with SO_REUSEPORT: a second server on the same port would share it
    without an error. Bound here without (SO_REUSEADDR only passes a TIME_WAIT left by an
    earlier run), then closed at once: a socket never connected leaves nothing behind.
    """
    if port == 0:
        return
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)


def _server(target: ASGIApp, settings: ServiceSettings) -> Granian:
    """Granian, serving `target` in this process's event loop (its lifespan not run)."""
    return Granian(
        target,
        address=settings.host,
        port=settings.port,
        # No lifespan from granian (it would start it after binding): `_Lifespan` runs it.
        interface=Interfaces.ASGINL,
        # HTTP/1.1 only (the gateway speaks nothing else to services; no sniffing for h2c
        # on every connection) and no WebSocket upgrade handling (no route uses one).
        http=HTTPModes.http1,
        websockets=False,
        backlog=LISTEN_BACKLOG,
        # Granian's wait for the next request's headers is the idle keep-alive time.
        http1_settings=HTTP1Settings(header_read_timeout=KEEP_ALIVE_SECONDS * 1000),
        log_level=LogLevels(settings.log_level.lower()),
        # No handlers of its own: its records reach our JSON handler through the root logger.
        log_dictconfig={"handlers": {}, "loggers": {"_granian": {"propagate": True}}},
    )


def serve(app: FastAPI, settings: ServiceSettings) -> int:
    """Serve `app` on the settings' host and port until SIGTERM or SIGINT; the exit status.

    Granian's Rust HTTP server, embedded in this process's uvloop event loop (one process,
    as a supervisor or Kubernetes sees it). The app's lifespan starts first; only then is
    the port bound (connections made earlier are refused). On a signal the server stops
    accepting connections, closes idle keep-alive ones and lets the requests in flight
    finish; those still running after `GRACEFUL_SHUTDOWN_SECONDS`, or at once on a second
    signal, are cut short (answered 503 when nothing was sent yet). Then the lifespan
    closes the service's resources. The exit status is 0, or 1 when the app failed to start
    or to close, or the port could not be bound (one JSON error line says why). A signal
    during the startup cancels it: its cleanup runs and the exit status is 0.
    """
    in_flight: RequestsInFlight = app.state.requests_in_flight

    async def main() -> int:
        loop = asyncio.get_running_loop()
        lifespan = _Lifespan(app)
        signals = 0
        serving = False
        server: Granian | None = None
        deadline: asyncio.TimerHandle | None = None

        def cut_short(when: str) -> None:
            log.warning("cancelling %d requests still running %s", in_flight.cut_short(), when)

        def on_signal() -> None:
            nonlocal signals, deadline
            signals += 1
            if not serving:
                if signals == 1:
                    log.info("stopping while starting")
                    lifespan.stop_starting()
            elif signals == 1:
                log.info("stopping: requests in flight get %s s", GRACEFUL_SHUTDOWN_SECONDS)
                deadline = loop.call_later(GRACEFUL_SHUTDOWN_SECONDS, cut_short, "at the deadline")
                assert server is not None  # noqa: S101 - narrows: serving by now
                stop_notice(app).set()  # streams end cleanly now, not cut at the deadline
                server.stop()  # type: ignore[no-untyped-call]
            else:  # as uvicorn on a second Ctrl-C: no more waiting
                if deadline is not None:
                    deadline.cancel()
                cut_short("on a second signal")

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal)
        try:
            await lifespan.startup()
        except _StoppedWhileStarting:
            log.info("stopped before the service had started")
            return 0
        except Exception as exc:
            log.error("could not start: %s", exc, exc_info=exc)
            return 1
        status = 0
        server = _server(_with_state(app, lifespan.state) if lifespan.state else app, settings)
        if not signals:
            serving = True
            try:
                _refuse_taken_address(settings.host, settings.port)
                await server.serve()
            except (OSError, RuntimeError) as exc:  # port taken (RuntimeError: granian's bind)
                log.error("could not serve on %s:%s: %s", settings.host, settings.port, exc)
                status = 1
            finally:
                if deadline is not None:
                    deadline.cancel()
            if server.interrupt_children:  # its worker ended unexpectedly (logged)
                status = 1
        try:
            await lifespan.shutdown()
        except Exception as exc:
            log.error("could not close cleanly: %s", exc, exc_info=exc)
            status = 1
        return status

    return uvloop.run(main())


def _parser(name: str, extra: Sequence[ExtraCommand]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"bazaar-{name}", description=f"Bazaar {name} service")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("create-db", help="create the service's database if it is missing")
    up = sub.add_parser("migrate", help="migrate the database (to head by default)")
    up.add_argument("revision", nargs="?", default="head")
    down = sub.add_parser("downgrade", help="migrate the database down to a revision")
    down.add_argument("revision")
    rev = sub.add_parser("revision", help="create a new date-prefixed migration file")
    rev.add_argument("-m", "--message", required=True)
    sub.add_parser("current", help="print the database's current revision")
    configure_topology(
        sub.add_parser(
            "topology", help="declare the broker's exchange, queues and bindings (a deploy step)"
        )
    )
    sub.add_parser("settings", help="print the effective settings as JSON (secrets masked)")
    sub.add_parser("seed", help="load the demo data (idempotent)")
    sub.add_parser("serve", help="serve HTTP until SIGTERM/SIGINT")
    doc = sub.add_parser("openapi", help="print the OpenAPI document")
    doc.add_argument("--output", type=Path, help="write to this file instead of stdout")
    configure_parked(sub.add_parser("parked", help="list, show or re-drive parked events"))
    for command in extra:
        command.configure(sub.add_parser(command.name, help=command.help))
    return parser


def run(commands: ServiceCommands, argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run one command; returns the exit status."""
    args = _parser(commands.name, commands.extra).parse_args(argv)
    settings = commands.settings()
    url = settings.dsn()
    where = commands.migrations_dir
    for command in commands.extra:
        if args.command == command.name:
            return command.run(settings, args)
    match args.command:
        case "create-db":
            created = asyncio.run(ensure_database(url))
            _say(f"{commands.name}: database {'created' if created else 'already exists'}")
        case "migrate":
            migrations.upgrade(where, url, args.revision)
            _say(f"{commands.name}: database migrated to {args.revision}")
        case "downgrade":
            migrations.downgrade(where, url, args.revision)
            _say(f"{commands.name}: database downgraded to {args.revision}")
        case "revision":
            migrations.revision(where, url, args.message)
        case "current":
            migrations.current(where, url)
        case "settings":
            _say(json.dumps(settings_dump(settings), default=str, sort_keys=True))
        case "seed":
            if commands.seed is None:
                _say(f"{commands.name}: no demo data")
            else:
                added = asyncio.run(commands.seed(settings))
                _say(f"{commands.name}: demo data loaded ({added} new)")
        case "serve":
            configure_logging(commands.name, settings.log_level)
            return serve(commands.app(settings), settings)
        case "openapi":
            document = openapi_document(commands.app(settings))
            if args.output:
                args.output.write_text(document)
            else:
                sys.stdout.write(document)
        case "topology":
            messaging = messaging_settings(settings)
            return run_topology(
                messaging.url if messaging else None,
                settings.service_name,
                commands.app(settings).state.subscriptions,
                messaging.consumer.retry_delays_ms if messaging else (),
                args,
            )
        case "parked":
            broker = settings.amqp_url.get_secret_value() if settings.amqp_url else None
            subscriptions = commands.app(settings).state.subscriptions
            return run_parked(broker, settings.service_name, subscriptions, args)
    return 0
