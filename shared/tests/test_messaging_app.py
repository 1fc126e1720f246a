"""The app factory runs the relay and consumers; one trace runs from HTTP through the broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import asyncpg
import pytest
import pytest_asyncio
from fastapi import APIRouter, FastAPI, Request
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import SecretStr

from bazaar.shared.app import create_service_app
from bazaar.shared.messaging import PROCESSED_MESSAGE_DDL, Subscription
from bazaar.shared.middleware import ServiceMiddleware
from bazaar.shared.outbox import OUTBOX_DDL, add_event
from bazaar.shared.settings import ServiceSettings
from bazaar.shared.telemetry import setup_tracing
from bazaar.shared.testing.amqp import eventually
from bazaar.shared.testing.asgi import serve_in_process
from bazaar.shared.testing.postgres import DatabaseFactory

TYPE = "test.gadget.made"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class GadgetSettings(ServiceSettings):
    service_name: ClassVar[str] = "gadgets"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(database_factory: DatabaseFactory) -> str:
    url = await database_factory.create("messaging_app")
    conn = await asyncpg.connect(url)
    try:
        for statement in (*OUTBOX_DDL, *PROCESSED_MESSAGE_DDL):
            await conn.execute(statement)
        await conn.execute("CREATE TABLE gadget_seen (event_id text PRIMARY KEY, trace text)")
    finally:
        await conn.close()
    return url


def gadget_app(database_url: str, amqp_url: str | None) -> FastAPI:
    router = APIRouter()

    @router.post("/gadgets", status_code=202)
    async def make_gadget(request: Request) -> dict[str, str]:
        async with request.app.state.db.transaction() as conn:
            event = await add_event(
                conn, source="/bazaar/gadgets", type=TYPE, subject="g1", data={"name": "g1"}
            )
        return {"event_id": event["id"]}

    async def remember(conn: asyncpg.Connection, event: dict[str, Any]) -> None:
        await conn.execute(
            "INSERT INTO gadget_seen (event_id, trace) VALUES ($1, $2)",
            event["id"],
            event.get("traceparent"),
        )

    settings = GadgetSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=SecretStr(database_url),
        amqp_url=SecretStr(amqp_url) if amqp_url else None,
        outbox_poll_seconds=0.2,
    )
    return create_service_app(
        settings,
        title="Gadgets",
        description="A service with one event and one consumer.",
        routers=[router],
        error_map={},
        subscriptions=[Subscription("seen", (TYPE,), remember)],
    )


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Spans of the process's tracer provider, recorded for one test only.

    The provider is process-wide: left recording, it would make every app built later in
    this pytest process record and export spans.
    """
    provider = setup_tracing("gadgets", "test", None)
    assert not provider.recording
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        provider.stop_recording()


async def test_one_trace_runs_from_the_request_through_the_relay_to_the_consumer(
    database_url: str, amqp_url: str, exporter: InMemorySpanExporter
) -> None:
    app = gadget_app(database_url, amqp_url)
    parent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    try:
        async with serve_in_process(app) as client:
            await asyncio.wait_for(app.state.messaging.wait_started(), 10)
            response = await client.post("/gadgets", headers={"traceparent": parent})
            assert response.status_code == 202
            event_id = response.json()["event_id"]

            def consumer_spans() -> list[Any]:
                return [
                    s
                    for s in exporter.get_finished_spans()
                    if s.kind is SpanKind.CONSUMER
                    and s.attributes
                    and s.attributes.get("messaging.message.id") == event_id
                ]

            async def consumed() -> bool:
                return bool(consumer_spans())

            await eventually(consumed)
            ready = await client.get("/readyz")
            metrics = (await client.get("/metrics")).text
        spans = exporter.get_finished_spans()
    finally:
        exporter.clear()
    [consumed] = [s for s in spans if s.kind is SpanKind.CONSUMER and s.name.endswith(".seen")]
    [produced] = [s for s in spans if s.kind is SpanKind.PRODUCER]
    [served] = [s for s in spans if s.kind is SpanKind.SERVER]
    for span in (served, produced, consumed):
        assert format(span.context.trace_id, "032x") == TRACE_ID
    assert produced.name == "publish bazaar.events"
    assert produced.attributes is not None
    assert produced.attributes["messaging.message.id"] == event_id
    assert consumed.parent is not None
    assert consumed.parent.span_id == produced.context.span_id
    assert consumed.attributes is not None
    assert consumed.name == "process gadgets.seen"
    assert consumed.attributes["messaging.system"] == "rabbitmq"
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    assert "bazaar_outbox_lag_seconds" in metrics
    assert 'bazaar_events_consumed_total{consumer="gadgets.seen",outcome="applied"} 1.0' in metrics


async def test_without_a_broker_url_the_app_starts_no_relay_and_events_wait(
    database_url: str,
) -> None:
    app = gadget_app(database_url, None)
    async with serve_in_process(app) as client:
        response = await client.post("/gadgets")
        assert response.status_code == 202
        assert app.state.messaging is None
        assert (await client.get("/readyz")).json()["checks"] == {"database": "ok"}
    conn = await asyncpg.connect(database_url)
    try:
        pending = await conn.fetchval(
            "SELECT published_at IS NULL FROM outbox WHERE id = $1",
            uuid.UUID(response.json()["event_id"]),
        )
    finally:
        await conn.close()
    assert pending is True


def test_apps_built_after_the_traced_one_record_no_spans_again(database_url: str) -> None:
    # Runs after the test above: its exporter was attached to the process's provider.
    assert not setup_tracing("gadgets", "test", None).recording
    app = gadget_app(database_url, None)
    [layer] = [m for m in app.user_middleware if m.cls is ServiceMiddleware]
    assert layer.kwargs["start_traces"] is True  # no server span: the ids alone
