"""Change notices from PostgreSQL: one LISTEN connection per process, fanned out by key.

A trigger (or any transaction) sends `pg_notify(channel, '<key> <position>')` when a row
changes, `position` growing with each change of that key; PostgreSQL delivers it when the
transaction commits, and never if it rolls back. `ChangeFeed` listens on a connection of its
own (never one of the pool's, so any number of waiters hold no pooled connection) and wakes
the watches of the key named. After a lost connection it listens again, and wakes every
watch as `missed`: what changed while nobody listened is found by reading again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from bazaar.shared.backoff import Backoff
from bazaar.shared.tasks import OutageLog, cancel_and_wait, wait_at_most

log = logging.getLogger("bazaar.notify")

#: How long closing the LISTEN connection may take before it is cut.
CLOSE_TIMEOUT_SECONDS = 5.0


class Watch:
    """One waiter's view of a key: `wake` is set on each notice of it, a reconnect and close.

    The waiter clears `wake`, then asks `unseen(position)` whether there is anything newer
    than what it has to read.
    """

    __slots__ = ("_feed", "closed", "key", "missed", "position", "wake")

    def __init__(self, feed: ChangeFeed | None, key: str) -> None:
        self._feed = feed
        self.key = key
        self.wake = asyncio.Event()
        #: The highest position a notice named since the watch began.
        self.position = 0
        #: Notices may have been lost (the feed listened again): read once to be sure.
        self.missed = False
        #: The feed is closing (the process stops) or the watch was closed.
        self.closed = False

    def unseen(self, position: int) -> bool:
        """Whether a change beyond `position` may exist (and forget a reconnect's doubt)."""
        missed, self.missed = self.missed, False
        return missed or self.position > position

    def close(self) -> None:
        """Stop watching (idempotent)."""
        self.closed = True
        self.wake.set()
        if self._feed is not None:
            self._feed._forget(self)
            self._feed = None


class ChangeFeed:
    """LISTEN on one channel for the whole process; wake the watches of each notice's key."""

    def __init__(
        self,
        dsn: str,
        channel: str,
        *,
        name: str = "change feed",
        retry_seconds: float = 0.5,
        max_retry_seconds: float = 5.0,
        ping_seconds: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.channel = channel
        self.name = name
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        #: A connection silent this long is asked `SELECT 1`; no answer in time: reconnect.
        self.ping_seconds = ping_seconds
        self.connect_timeout = connect_timeout
        #: Set while LISTEN is in place (readiness, tests).
        self.listening = asyncio.Event()
        #: How many times LISTEN was (re)established.
        self.connects = 0
        self._watches: dict[str, set[Watch]] = {}
        self._closed = False

    def __len__(self) -> int:
        return sum(len(watches) for watches in self._watches.values())

    def watch(self, key: str) -> Watch:
        """Start watching `key`; close the watch when done. Closed at once if the feed is."""
        if self._closed:
            closed = Watch(None, key)
            closed.close()
            return closed
        watch = Watch(self, key)
        self._watches.setdefault(key, set()).add(watch)
        return watch

    def _forget(self, watch: Watch) -> None:
        watches = self._watches.get(watch.key)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[watch.key]

    def close(self) -> None:
        """End every watch (their waiters finish) and refuse new ones; idempotent."""
        self._closed = True
        for watches in list(self._watches.values()):
            for watch in list(watches):
                watch.close()

    def _notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        key, _, rest = payload.partition(" ")
        watches = self._watches.get(key)
        if not watches:
            return
        try:
            position = int(rest)
        except ValueError:  # no position to compare: read again, to be sure
            position = None
        for watch in watches:
            if position is None:
                watch.missed = True
            elif position > watch.position:
                watch.position = position
            watch.wake.set()

    def _wake_all_missed(self) -> None:
        for watches in self._watches.values():
            for watch in watches:
                watch.missed = True
                watch.wake.set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Listen inside the block; on leaving it, end every watch and close the connection."""
        task = asyncio.create_task(self._run(), name=f"{self.name} LISTEN")
        try:
            yield
        finally:
            self.close()
            await cancel_and_wait(task)  # its reconnect loop may swallow one cancel

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(self.retry_seconds, self.max_retry_seconds)
        outages = OutageLog(f"{self.name} LISTEN")
        while True:
            lost = asyncio.Event()
            try:
                conn = await self._listen(lost)
            except Exception as exc:
                outages.record(exc)
                await backoff.sleep()
                continue
            outages.end()
            since = loop.time()
            try:
                await self._hold(conn, lost)
            except Exception as exc:
                outages.record(exc)
                # Lost or frozen: no goodbye to wait for, and no late notice through it.
                conn.terminate()
            finally:
                self.listening.clear()
                await _close(conn)
            if loop.time() - since >= self.ping_seconds:
                backoff.reset()  # it had held a while: this loss starts a new outage
            # A server that takes connections and drops them at once is not hammered.
            await backoff.sleep()

    async def _listen(self, lost: asyncio.Event) -> asyncpg.Connection:
        """A new connection with LISTEN in place; every watch is woken to read again."""
        conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(self.channel, self._notify)
        except BaseException:  # failed or cancelled (shutdown) before listening: no leak
            conn.terminate()
            raise
        self.connects += 1
        self.listening.set()
        # Changes committed while nobody listened sent their notices to no one.
        self._wake_all_missed()
        return conn

    async def _hold(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Return when the connection is lost; a frozen one is found by a ping."""
        while not await wait_at_most(lost, self.ping_seconds):
            async with asyncio.timeout(self.connect_timeout):
                await conn.execute("SELECT 1")
        raise ConnectionError("the LISTEN connection was lost")


async def _close(conn: asyncpg.Connection) -> None:
    """Close the connection; one whose server does not answer the goodbye is cut."""
    if conn.is_closed():
        return
    try:
        await conn.close(timeout=CLOSE_TIMEOUT_SECONDS)
    except Exception:
        conn.terminate()
    except BaseException:
        conn.terminate()
        raise
