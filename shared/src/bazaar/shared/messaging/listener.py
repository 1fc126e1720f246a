"""The relay's wake-up call: LISTEN on the outbox channel, on a connection of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from bazaar.shared.outbox import OUTBOX_CHANNEL

log = logging.getLogger("bazaar.messaging.relay")

#: How long closing the LISTEN connection may take before it is cut.
CLOSE_TIMEOUT_SECONDS = 5.0


class OutboxListener:
    """Sets `wake` on every NOTIFY of a commit with events; polling covers its gaps."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.wake = asyncio.Event()
        self._connection: asyncpg.Connection | None = None

    def _on_notify(self, *_args: object) -> None:
        self.wake.set()

    async def listen(self) -> None:
        """LISTEN on the outbox channel, again after a lost connection."""
        if self._connection is not None and not self._connection.is_closed():
            return
        listener: asyncpg.Connection | None = None
        try:
            listener = await asyncpg.connect(self.dsn, timeout=5)
            await listener.add_listener(OUTBOX_CHANNEL, self._on_notify)
            # A lost listener wakes the loop, which listens again at once.
            listener.add_termination_listener(self._on_notify)
        except Exception as exc:
            log.warning("outbox LISTEN unavailable (%s); polling meanwhile", exc)
            if listener is not None:  # connected, but LISTEN failed: do not leak it
                listener.terminate()
            return
        except BaseException:  # cancelled (shutdown) between connecting and listening
            if listener is not None:
                listener.terminate()
            raise
        self._connection = listener
        # Events committed while nobody listened are found by the pass that follows.
        self.wake.set()

    async def close(self) -> None:
        """Stop listening."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            # A server that does not answer the goodbye gets the connection cut after this.
            with contextlib.suppress(Exception):
                await connection.close(timeout=CLOSE_TIMEOUT_SECONDS)
