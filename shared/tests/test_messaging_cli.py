"""`<service> parked list|show|redrive`: operators see why a message was parked and re-drive it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import pytest
import pytest_asyncio
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from bazaar.shared.app import create_service_app
from bazaar.shared.cli import ServiceCommands, run
from bazaar.shared.db import Database, PoolSettings
from bazaar.shared.messaging import (
    PROCESSED_MESSAGE_DDL,
    ConsumerSettings,
    Messaging,
    MessagingSettings,
    Subscription,
)
from bazaar.shared.outbox import OUTBOX_DDL, add_event
from bazaar.shared.settings import ServiceSettings
from bazaar.shared.testing.amqp import eventually
from bazaar.shared.testing.postgres import DatabaseFactory

TYPE = "test.thing.done"
QUEUE = "things.done"


class ThingSettings(ServiceSettings):
    service_name: ClassVar[str] = "things"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(database_factory: DatabaseFactory) -> str:
    url = await database_factory.create("messaging_cli")
    conn = await asyncpg.connect(url)
    try:
        for statement in (*OUTBOX_DDL, *PROCESSED_MESSAGE_DDL):
            await conn.execute(statement)
        await conn.execute("CREATE TABLE thing (event_id text PRIMARY KEY)")
    finally:
        await conn.close()
    return url


class Switch:
    """Whether the handler's dependency works yet."""

    working = False


async def do_thing(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
    if not Switch.working:
        raise LookupError("the thing's dependency is missing")
    await conn.execute("INSERT INTO thing (event_id) VALUES ($1)", event["id"])


SUBSCRIPTIONS = [Subscription("done", (TYPE,), do_thing)]


def commands(database_url: str, amqp_url: str | None) -> ServiceCommands:
    def settings() -> ThingSettings:
        return ThingSettings(
            _env_file=None,  # type: ignore[call-arg]
            environment="test",
            database_url=SecretStr(database_url),
            amqp_url=SecretStr(amqp_url) if amqp_url else None,
        )

    def app(s: ServiceSettings) -> FastAPI:
        return create_service_app(
            s,
            title="Things",
            description="Things.",
            routers=[],
            error_map={},
            subscriptions=SUBSCRIPTIONS,
        )

    return ServiceCommands(name="things", settings=settings, app=app, migrations_dir=Path("."))


@pytest_asyncio.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(PoolSettings(dsn=database_url, max_size=4))
    await database.open()
    yield database
    await database.close()


async def cli(commands: ServiceCommands, *argv: str) -> int:
    return await asyncio.to_thread(run, commands, list(argv))


async def test_operators_list_show_and_redrive_a_parked_message(
    db: Database, database_url: str, amqp_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    messaging = Messaging(
        MessagingSettings(url=amqp_url, consumer=ConsumerSettings(max_attempts=1)),
        service="things",
        db=db,
        registry=CollectorRegistry(),
        subscriptions=SUBSCRIPTIONS,
    )
    ops = commands(database_url, amqp_url)
    async with messaging.running():
        await asyncio.wait_for(messaging.wait_started(), 10)
        async with db.transaction() as conn:
            event = await add_event(conn, source="/bazaar/things", type=TYPE, subject="t", data={})

        async def parked() -> bool:
            return messaging.metrics.value("bazaar_events_parked_total", consumer=QUEUE) == 1

        await eventually(parked)
        capsys.readouterr()

        assert await cli(ops, "parked", "list") == 0
        [line] = capsys.readouterr().out.splitlines()
        listed = json.loads(line)
        assert listed["consumer"] == QUEUE
        assert listed["message_id"] == event["id"]
        assert listed["type"] == TYPE
        assert listed["reason"] == "LookupError: the thing's dependency is missing"
        assert listed["attempts"] == 1

        assert await cli(ops, "parked", "show", event["id"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["body"]["id"] == event["id"]
        assert await cli(ops, "parked", "show", "no-such-id") == 1

        Switch.working = True
        try:
            assert await cli(ops, "parked", "redrive", "--id", event["id"]) == 0
            assert json.loads(capsys.readouterr().out) == {"consumer": QUEUE, "redriven": 1}

            async def done() -> bool:
                async with db.connection() as conn:
                    return bool(await conn.fetchval("SELECT count(*) FROM thing") == 1)

            await eventually(done)
        finally:
            Switch.working = False
    assert await cli(ops, "parked", "list") == 0
    assert capsys.readouterr().out == ""


async def test_the_parked_commands_refuse_without_a_broker_or_for_an_unknown_consumer(
    database_url: str, amqp_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli(commands(database_url, None), "parked", "list") == 2
    assert "no broker configured" in capsys.readouterr().err
    assert await cli(commands(database_url, amqp_url), "parked", "list", "--consumer", "x") == 2
    assert "no consumer 'x'" in capsys.readouterr().err
