"""A provider's side of a pact: replay the pacts against the real provider, messages included."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web
from pact import Verifier
from pact.types import Message

from bazaar.shared.messaging.relay import publication
from bazaar.shared.testing.pacts.consumer import ROUTING_KEY

#: Where the verifier asks for provider states and for messages (the provider's test hooks).
STATE_PATH = "/_pact/state"
MESSAGE_PATH = "/_pact/message"

#: A provider state's setup: awaited with the state's parameters (by name) before Pact
#: replays an interaction that names the state. What it returns (None: nothing) is the
#: state's values: the verifier puts them where the pact says `fromProviderState` (an id the
#: provider chose, in a request path), and a message's producer gets them with the params.
StateSetup = Callable[..., Coroutine[Any, Any, Mapping[str, Any] | None]]
#: A message producer: given the parameters of the interaction's provider states (and the
#: values their setups returned), make the provider emit its message through its real code
#: path and return it as published.
MessageMaker = Callable[[Mapping[str, Any]], Coroutine[Any, Any, Message]]


@dataclass(frozen=True)
class Verification:
    """The outcome of replaying pacts against a provider."""

    passed: bool
    #: The verifier's report, one line per check (what failed, and why).
    output: str
    #: The verifier's JSON results: `errors`, `interactionResults`...
    results: dict[str, Any]

    @property
    def verified(self) -> list[str]:
        """The description of each interaction replayed."""
        return [str(r["description"]) for r in self.results.get("interactionResults", [])]

    @property
    def failures(self) -> list[tuple[str, str, str]]:
        """Each thing that failed: (interaction, where, the verifier's words for what)."""
        found_all = []
        for error in self.results.get("errors", []):
            interaction = str(error.get("interaction", "")).rsplit(" - ", 1)[-1]
            found = error.get("mismatch") or {}
            for mismatch in found.get("mismatches") or [found]:
                where = str(mismatch.get("path") or mismatch.get("type", ""))
                what = str(mismatch.get("mismatch") or mismatch.get("message", ""))
                found_all.append((interaction, where, what))
        return found_all


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

    The state change (JSON `{state, params, action}`) awaits the state's setup and answers
    the values it returned (a JSON object: the verifier's `fromProviderState` context). The
    message request (`{description, providerStates}`) answers with the message made for it,
    its metadata in the `Pact-Message-Metadata` header (base64 JSON), as Pact's relay
    expects. A failing setup or producer answers 500 with its error, which fails the
    interaction.
    """
    #: The values each state's last setup returned (the verifier replays one at a time).
    values: dict[str, Mapping[str, Any]] = {}

    async def change_state(request: web.Request) -> web.Response:
        change = await request.json()
        if change.get("action", "setup") != "setup":
            return web.json_response({})
        state = change.get("state")
        if state not in states:
            return web.Response(status=500, text=f"the provider knows no state {state!r}")
        try:
            values[state] = dict(await states[state](**(change.get("params") or {})) or {})
        except Exception as exc:
            return web.Response(status=500, text=f"{state!r}: {exc!r}")
        return web.json_response(values[state])

    async def produce(request: web.Request) -> web.Response:
        wanted = await request.json()
        name = wanted.get("description")
        if name not in messages:
            return web.Response(status=500, text=f"the provider produces no message {name!r}")
        params: dict[str, Any] = {}
        for state in wanted.get("providerStates") or []:
            params.update(state.get("params") or {})
            params.update(values.get(state.get("name"), {}))
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
    """The newest `event_type` event in the outbox, as the relay publishes it
    (`relay.publication`): the body and content type of its AMQP message, and its routing
    key as metadata. `conn` reads json as the services' pools do."""
    row = await conn.fetchrow(
        "SELECT type, event FROM outbox WHERE type = $1 ORDER BY position DESC LIMIT 1",
        event_type,
    )
    if row is None:
        raise LookupError(f"no {event_type} event in the outbox")
    published = publication(row)
    return Message(
        contents=published.message.body,
        metadata={ROUTING_KEY: published.routing_key},
        content_type=published.message.content_type,
    )
