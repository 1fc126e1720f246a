"""One supervised program: start it, notice its exit, restart it with back-off, probe it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

#: Restart back-off: first wait, cap, and the uptime after which a crash counts as new.
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
STABLE_AFTER = 30.0
_PR_SET_PDEATHSIG = 1


def say(line: str) -> None:
    """Print a line now (the supervisor's output is often a pipe or a file)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class Program:
    """What to run: a name, its argv, extra environment, and a URL answering 200 when ready."""

    name: str
    argv: list[str]
    ready_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Program:
        """A program from its JSON form in the suite file."""
        argv = data["argv"]
        env = data.get("env") or {}
        assert isinstance(argv, list) and isinstance(env, dict)
        ready = data.get("ready_url")
        return cls(
            name=str(data["name"]),
            argv=[str(a) for a in argv],
            ready_url=str(ready) if ready else None,
            env={str(k): str(v) for k, v in env.items()},
        )


def is_listening(program: dict[str, object]) -> bool:
    """Whether something already accepts connections on the program's ready_url address."""
    parts = urlsplit(str(program["ready_url"]))
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 0.5):
            return True
    except OSError:
        return False


def is_ready(url: str) -> tuple[bool, str]:
    """Probe a readiness URL once: (answered 200, a short description of the answer)."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as answer:
            return answer.status == 200, f"HTTP {answer.status}"
    except urllib.error.HTTPError as error:
        return False, f"HTTP {error.code}: {error.read(300).decode(errors='replace')}"
    except (OSError, ValueError) as error:
        return False, f"no answer: {error}"


def _die_with_supervisor() -> None:
    """In the child, before exec: get SIGTERM when the supervisor dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """The supervisor's record of one program."""

    def __init__(self, program: Program, run_dir: Path) -> None:
        self.program = program
        self.name = program.name
        self.log = run_dir / f"{program.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.backoff = FIRST_BACKOFF
        self.restart_at: float | None = None
        self.ready = program.ready_url is None
        self.last_answer = "not probed yet"

    def start(self) -> None:
        """Start the program in its own session, output appended to its log."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.program.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.program.env},
                start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops us
                preexec_fn=_die_with_supervisor,  # safe: the supervisor runs no threads
            )
        self.started_at = time.monotonic()
        self.restart_at = None

    def tend(self, now: float) -> None:
        """Notice an exit (report it, schedule a restart) or restart when the wait is over."""
        if self.process is not None:
            status = self.process.poll()
            if status is None:
                return
            uptime = now - self.started_at
            if uptime > STABLE_AFTER:
                self.backoff = FIRST_BACKOFF
            self.process = None
            self.ready = self.program.ready_url is None
            self.restart_at = now + self.backoff
            say(
                f"supervisor: {self.name} exited ({describe_status(status)}) after {uptime:.1f} s; "
                f"restarting in {self.backoff:.1f} s (restart {self.restarts + 1}). Its log:"
            )
            for line in self.log_tail(5):
                say(f"    {line}")
            self.backoff = min(self.backoff * 2, MAX_BACKOFF)
        elif self.restart_at is not None and now >= self.restart_at:
            self.restarts += 1
            self.start()

    def probe(self, *, announced: bool) -> None:
        """Ask the readiness URL once, if the program runs and is not known ready."""
        if self.ready or self.process is None or self.program.ready_url is None:
            return
        self.ready, self.last_answer = is_ready(self.program.ready_url)
        if self.ready and announced:
            say(f"supervisor: {self.name} is ready again")

    def signal(self, signum: int) -> None:
        """Send a signal to the program's whole process group."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def log_tail(self, lines: int) -> list[str]:
        """The last lines of the program's log."""
        try:
            with self.log.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
                return f.read().decode(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            return []

    def describe(self) -> dict[str, object]:
        """The program's state for the state file."""
        return {
            "pid": self.process.pid if self.process is not None else None,
            "ready": self.ready,
            "restarts": self.restarts,
            "log": str(self.log),
        }


def describe_status(status: int) -> str:
    """An exit status in words: `status 3`, `by SIGTERM`."""
    return f"by {signal.Signals(-status).name}" if status < 0 else f"status {status}"
