"""Consumer-driven contracts (Pact) in Bazaar's tests: mock providers, pact files, verification.

Pact's library (the Rust FFI bundled with pact-python) serves mock providers and replays
pacts against real providers, blocking the thread that calls it, while Bazaar's tests run on
one event loop. So a blocking Pact call runs in a worker thread while the loop goes on serving
the provider under test and the verifier's hooks (provider states, messages), and a callback
Pact makes from its thread (a message for a consumer) runs its async work back on the loop.
"""

from __future__ import annotations

import asyncio
import base64
import difflib
import json
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from bazaar.shared.db import Database
from bazaar.shared.events import CLOUDEVENTS_CONTENT_TYPE
from bazaar.shared.messaging import Subscription, claim_message, decode_event, encode_event

# Pact's library reports every consumer test and verification to an outside analytics service
# unless this is set: tests send nothing beyond 127.0.0.1. Set before the library first loads
# (at the first `Pact` or `Verifier`).
os.environ["PACT_DO_NOT_TRACK"] = "true"

from pact import Pact, Verifier
from pact.types import Message

#: How long a callback from Pact's threads waits for its work on the event loop.
CALLBACK_SECONDS = 30.0
#: Where the verifier asks for provider states and for messages (the provider's test hooks).
STATE_PATH = "/_pact/state"
MESSAGE_PATH = "/_pact/message"

#: Where the broker's routing key travels in a message pact's metadata.
ROUTING_KEY = "routingKey"

#: A provider state's setup: awaited with the state's parameters (by name) before Pact
#: replays an interaction that names the state.
StateSetup = Callable[..., Coroutine[Any, Any, None]]
#: A message producer: given the parameters of the interaction's provider states, make the
#: provider emit its message through its real code path and return it as published.
MessageMaker = Callable[[Mapping[str, Any]], Coroutine[Any, Any, Message]]


def new_pact(consumer: str, provider: str) -> Pact:
    """A V4 pact between two Bazaar services, with no interaction yet."""
    return Pact(consumer, provider).with_specification("V4")


@contextmanager
def mock_provider(pact: Pact) -> Iterator[str]:
    """Serve `pact`'s HTTP interactions on 127.0.0.1; yield the base URL.

    Leaving the block raises (pact.error.MismatchesError) unless every interaction was
    requested and nothing else was: the consumer does exactly what its contract says.
    """
    with pact.serve(addr="127.0.0.1") as server:
        yield str(server.url).rstrip("/")


async def deliver(
    pact: Pact, consume: Callable[[bytes, Mapping[str, Any]], Coroutine[Any, Any, None]]
) -> None:
    """Hand each message of `pact` to `consume` (body, metadata), as the broker would.

    Raises pact.error.PactVerificationError naming every message `consume` failed on.
    """
    loop = asyncio.get_running_loop()

    def handler(body: str | bytes | None, metadata: dict[str, object]) -> None:
        raw = body.encode() if isinstance(body, str) else (body or b"")
        asyncio.run_coroutine_threadsafe(consume(raw, metadata), loop).result(CALLBACK_SECONDS)

    await asyncio.to_thread(pact.verify, handler, "Async")


async def apply_event(
    body: bytes,
    metadata: Mapping[str, Any],
    *,
    service: str,
    subscriptions: Sequence[Subscription],
    db: Database,
) -> None:
    """Consume one message as `service`'s consumers do: decode the CloudEvent, route it by its
    routing key to the subscriptions bound to it, and apply each in one transaction with its
    inbox row (shared.messaging.Consumer, without the broker). Raises if nothing is bound."""
    event = decode_event(body)
    routing_key = metadata.get(ROUTING_KEY)
    bound = [s for s in subscriptions if routing_key in s.events]
    if not bound:
        raise LookupError(f"{service} binds no queue to the routing key {routing_key!r}")
    for subscription in bound:
        async with db.transaction() as conn:
            if await claim_message(conn, subscription.queue_name(service), event["id"]):
                await subscription.handle(conn, event)


def write_pact(directory: Path, *pacts: Pact) -> Path:
    """Write pacts of one consumer and provider (say, its HTTP and its message interactions)
    into their one file in `directory`, replacing it; return the file."""
    first, *others = pacts
    first.write_file(directory, overwrite=True)
    for other in others:
        other.write_file(directory, overwrite=False)  # merged into the same file
    return directory / f"{first.consumer}-{first.provider}.json"


def record_pact(generated: Path, committed_dir: Path) -> str | None:
    """Make the committed pact file the generated one; say how they differed (None if not).

    Like the OpenAPI drift check, a test fails on the answer: a change to a consumer's
    contract is reviewed and committed, never picked up silently. Unlike it, the new file is
    written at once (`git diff contracts/pacts` shows the change).
    """
    committed = committed_dir / generated.name
    fresh = generated.read_text("utf-8")
    if committed.exists():
        stored = committed.read_text("utf-8")
        if json.loads(stored) == json.loads(fresh):
            return None
    else:
        stored = ""
    committed_dir.mkdir(parents=True, exist_ok=True)
    committed.write_text(fresh, "utf-8")
    diff = difflib.unified_diff(
        stored.splitlines(), fresh.splitlines(), "committed", "generated", lineterm="", n=2
    )
    return f"{committed} was rewritten; review and commit it:\n" + "\n".join(list(diff)[:80])


@dataclass(frozen=True)
class Verification:
    """The outcome of replaying pacts against a provider."""

    passed: bool
    #: The verifier's report, one line per check (what failed, and why).
    output: str
    #: The verifier's JSON results: `errors`, `interactionResults`...
    results: dict[str, Any]

    @property
    def failures(self) -> list[str]:
        """One line per thing that failed: `<interaction> | <where>: <what>`."""
        lines = []
        for error in self.results.get("errors", []):
            interaction = str(error.get("interaction", "")).rsplit(" - ", 1)[-1]
            found = error.get("mismatch") or {}
            for mismatch in found.get("mismatches") or [found]:
                where = mismatch.get("path") or mismatch.get("type", "")
                what = mismatch.get("mismatch") or mismatch.get("message", "")
                lines.append(f"{interaction} | {where}: {what}")
        return lines


async def verify_provider(
    provider: str,
    sources: Sequence[Path],
    *,
    base_url: str | None = None,
    states: Mapping[str, StateSetup] | None = None,
    messages: Mapping[str, MessageMaker] | None = None,
    headers: Mapping[str, str] | None = None,
    description: str | None = None,
) -> Verification:
    """Replay the pacts in `sources` (files) against `provider`: its HTTP interactions against
    `base_url`, its message interactions against `messages` (by description), each after the
    setups of its provider `states`. `headers` replace the pact's own on every request (a
    live token instead of the consumer's example); `description` (a regex) narrows the run."""
    verifier = Verifier(provider, host="127.0.0.1")
    if base_url is not None:
        verifier.add_transport(url=base_url)
    for name, value in (headers or {}).items():
        verifier.add_custom_header(name, value)
    for source in sources:
        verifier.add_source(source)
    if description is not None:
        verifier.filter(description)
    verifier.set_coloured_output(enabled=False)
    async with _provider_hooks(states or {}, messages or {}) as port:
        verifier.state_handler(f"http://127.0.0.1:{port}{STATE_PATH}", body=True)
        if messages is not None:
            verifier.add_transport(protocol="message", port=port, path=MESSAGE_PATH)
        try:
            await asyncio.to_thread(verifier.verify)
        except RuntimeError:  # the FFI's word for "some interaction failed"
            passed = False
        else:
            passed = True
    return Verification(passed, str(verifier.output(strip_ansi=True)), verifier.results)


@asynccontextmanager
async def _provider_hooks(
    states: Mapping[str, StateSetup], messages: Mapping[str, MessageMaker]
) -> AsyncIterator[int]:
    """Serve the verifier's two callbacks on this loop, on 127.0.0.1; yield the port.

    The state change (JSON `{state, params, action}`) awaits the state's setup; the message
    request (`{description, providerStates}`) answers with the message made for it, its
    metadata in the `Pact-Message-Metadata` header (base64 JSON), as Pact's relay expects.
    A failing setup or producer answers 500 with its error, which fails the interaction.
    """

    async def change_state(request: web.Request) -> web.Response:
        change = await request.json()
        if change.get("action", "setup") != "setup":
            return web.json_response({})
        state = change.get("state")
        if state not in states:
            return web.Response(status=500, text=f"the provider knows no state {state!r}")
        try:
            await states[state](**(change.get("params") or {}))
        except Exception as exc:
            return web.Response(status=500, text=f"{state!r}: {exc!r}")
        return web.json_response({})

    async def produce(request: web.Request) -> web.Response:
        wanted = await request.json()
        name = wanted.get("description")
        if name not in messages:
            return web.Response(status=500, text=f"the provider produces no message {name!r}")
        params: dict[str, Any] = {}
        for state in wanted.get("providerStates") or []:
            params.update(state.get("params") or {})
        try:
            message = await messages[name](params)
        except Exception as exc:
            return web.Response(status=500, text=f"{name!r}: {exc!r}")
        metadata = dict(message.get("metadata") or {})
        content_type = message.get("content_type")
        if content_type:
            metadata.setdefault("contentType", content_type)
        encoded = base64.b64encode(json.dumps(metadata).encode()).decode()
        return web.Response(
            body=message["contents"],
            headers={
                "Content-Type": content_type or "application/octet-stream",
                "Pact-Message-Metadata": encoded,
            },
        )

    app = web.Application()
    app.router.add_post(STATE_PATH, change_state)
    app.router.add_post(MESSAGE_PATH, produce)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def outbox_message(conn: asyncpg.Connection, event_type: str) -> Message:
    """The newest `event_type` event in the outbox, as the relay publishes it: the body and
    content type of its AMQP message, and the routing key (the row's type) as metadata."""
    row = await conn.fetchrow(
        "SELECT type, event FROM outbox WHERE type = $1 ORDER BY position DESC LIMIT 1",
        event_type,
    )
    if row is None:
        raise LookupError(f"no {event_type} event in the outbox")
    event = row["event"] if isinstance(row["event"], dict) else json.loads(row["event"])
    published = encode_event(event)
    return Message(
        contents=published.body,
        metadata={ROUTING_KEY: row["type"]},
        content_type=published.content_type or CLOUDEVENTS_CONTENT_TYPE,
    )


async def empty_tables(conn: asyncpg.Connection) -> None:
    """Delete every row but Alembic's, foreign keys aside: a clean provider state in
    milliseconds (TRUNCATE costs a fsync per table)."""
    tables = await conn.fetch(
        "SELECT tablename FROM pg_tables "
        "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
    )
    # The names come from pg_tables, never from input.
    statements = "".join(f'DELETE FROM "{row["tablename"]}";' for row in tables)  # noqa: S608
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica;" + statements)
