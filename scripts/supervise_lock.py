"""The run directory of a supervisor: its lock (one per directory) and its state file."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import IO


class RunDir:
    """`.run/`: logs, `supervisor.lock` (held while a supervisor lives) and `supervisor.json`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hint = ""
        self._lock: IO[str] | None = None
        path.mkdir(parents=True, exist_ok=True)

    def try_lock(self) -> bool:
        """Take the lock; False if another process holds it. The kernel frees it at exit."""
        handle = (self.path / "supervisor.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle
        return True

    def owner(self) -> int:
        """The pid written by the lock's holder (0 if unknown)."""
        text = (self.path / "supervisor.lock").read_text().strip()
        return int(text) if text.isdigit() else 0

    def release(self) -> None:
        """Give the lock back (for a check that only wanted to know)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def write_state(self, state: str, programs: dict[str, object]) -> None:
        """Replace the state file in one rename, so readers never see half of it."""
        record = {
            "pid": os.getpid(),
            "state": state,
            "hint": self.hint,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "programs": programs,
        }
        partial = self.path / "supervisor.json.partial"
        partial.write_text(json.dumps(record, indent=2, sort_keys=True))
        partial.replace(self.path / "supervisor.json")

    def read_state(self) -> dict[str, object]:
        """The last state written, or {} if there is none (yet)."""
        try:
            loaded = json.loads((self.path / "supervisor.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return loaded if isinstance(loaded, dict) else {}
