"""Password hashing with argon2id, off the event loop, in a bounded pool of threads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bazaar.shared.problem import ServiceUnavailable


class HashingBusy(ServiceUnavailable):
    """Every hashing thread is busy and the wait ran out: shed the request, fast."""

    slug, title = "overloaded", "Overloaded"
    default_detail = "Too many logins at once; retry in a moment."


class Argon2Passwords:
    """argon2id hashing in `threads` worker threads; callers wait at most `max_wait` for one."""

    def __init__(
        self,
        *,
        time_cost: int,
        memory_kib: int,
        parallelism: int,
        threads: int,
        max_wait: float = 5.0,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")
        # Queue in the event loop (cheap), not in the executor (unbounded): a flood is
        # answered 503 after max_wait instead of stalling every login behind it.
        self._slots = asyncio.Semaphore(threads)
        self._max_wait = max_wait
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        """A new salted hash of `password`."""
        async with self._slot():
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether `password` matches; with no hash, spend the same time and answer False."""
        if password_hash is None:
            # Unknown accounts cost a full verification too, so timing tells nothing.
            password_hash = await self._dummy_hash()
            await self._check(password_hash, password)
            return False
        return await self._check(password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters than today's."""
        return self._hasher.check_needs_rehash(password_hash)

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def _check(self, password_hash: str, password: str) -> bool:
        async with self._slot():
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(
                    self._pool, self._hasher.verify, password_hash, password
                )
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._max_wait):
                await self._slots.acquire()
        except TimeoutError:
            raise HashingBusy() from None
        try:
            yield
        finally:
            self._slots.release()

    async def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = await self.hash("an unused password to verify against")
        return self._dummy
