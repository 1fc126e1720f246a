"""Password hashing never runs on the event loop's thread, so logins cannot stall requests."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from argon2 import PasswordHasher

from bazaar.auth.adapters.passwords import Argon2Passwords


async def test_hashing_and_verifying_run_in_worker_threads_not_on_the_loop(
    monkeypatch: Any,
) -> None:
    loop_thread = threading.current_thread()
    seen: list[threading.Thread] = []
    original_hash, original_verify = PasswordHasher.hash, PasswordHasher.verify

    def recording_hash(self: PasswordHasher, password: str | bytes, **kw: Any) -> str:
        seen.append(threading.current_thread())
        return original_hash(self, password, **kw)

    def recording_verify(self: PasswordHasher, hash: str | bytes, password: str | bytes) -> bool:
        seen.append(threading.current_thread())
        return original_verify(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "hash", recording_hash)
    monkeypatch.setattr(PasswordHasher, "verify", recording_verify)
    passwords = Argon2Passwords(time_cost=2, memory_kib=19456, parallelism=1, threads=2)
    try:
        stored = await passwords.hash("correct horse battery")
        assert await passwords.verify(stored, "correct horse battery") is True
        assert await passwords.verify(None, "for an unknown account") is False
    finally:
        passwords.close()

    assert len(seen) >= 4  # hash, verify, the dummy hash, its verify
    assert all(t is not loop_thread and t.name.startswith("argon2") for t in seen)


async def test_when_every_hashing_thread_is_busy_past_the_wait_the_caller_gets_a_fast_503() -> None:
    from bazaar.auth.adapters.passwords import HashingBusy

    passwords = Argon2Passwords(
        time_cost=2, memory_kib=19456, parallelism=1, threads=1, max_wait=0.001
    )
    try:
        stored = await passwords.hash("correct horse battery")
        results = await asyncio.gather(
            *(passwords.verify(stored, "correct horse battery") for _ in range(6)),
            return_exceptions=True,
        )
    finally:
        passwords.close()

    busy = [r for r in results if isinstance(r, HashingBusy)]
    assert results.count(True) >= 1 and len(busy) >= 1
    assert busy[0].status == 503 and busy[0].headers["Retry-After"] == "1"
