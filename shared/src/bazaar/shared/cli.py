"""The command line every service offers: create-db, migrate, seed, serve, openapi, parked…"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from bazaar.shared import migrations
from bazaar.shared.dbadmin import ensure_database
from bazaar.shared.logging import configure_logging
from bazaar.shared.messaging.operator import configure_parked, run_parked
from bazaar.shared.settings import ServiceSettings, settings_dump

#: Seconds in-flight requests get to finish after SIGTERM before the server exits.
GRACEFUL_SHUTDOWN_SECONDS = 20


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
            configure_logging(commands.name, settings.version, settings.log_level)
            config = uvicorn.Config(
                commands.app(settings),
                host=settings.host,
                port=settings.port,
                log_config=None,
                access_log=False,
                server_header=False,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            )
            uvicorn.Server(config).run()
        case "openapi":
            document = openapi_document(commands.app(settings))
            if args.output:
                args.output.write_text(document)
            else:
                sys.stdout.write(document)
        case "parked":
            broker = settings.amqp_url.get_secret_value() if settings.amqp_url else None
            subscriptions = commands.app(settings).state.subscriptions
            return run_parked(broker, settings.service_name, subscriptions, args)
    return 0
