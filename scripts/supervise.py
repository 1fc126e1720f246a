#!/usr/bin/env python3
"""One supervisor for a suite of processes: prepare, start, restart on crash, stop cleanly.

    supervise.py up SUITE.json [--run-dir DIR] [--detach] [--ready-timeout S] [--since T0]
    supervise.py down [--run-dir DIR]
    supervise.py status [--run-dir DIR]

The suite is data (JSON): `prepare` steps run once (steps of one `chain` in order, chains side
by side), then every program starts in
its own session with its output in DIR/<name>.log. A program that exits is reported (status,
uptime, the last lines of its log) and restarted with a doubling back-off. Once every
`ready_url` answers 200 the suite's `banner` is printed. SIGINT/SIGTERM/SIGHUP stop the
programs in reverse order with SIGTERM (SIGKILL after the grace period, or at a second
Ctrl-C). One supervisor per run directory: a lock says so, and `down` stops a detached one.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from supervise_child import Child, Program, describe_status, is_listening, say
from supervise_lock import RunDir
from supervise_prepare import run_prepare

#: Seconds an orderly stop waits for every program before SIGKILL: services drain requests
#: for 20 s, then close their database pool (up to 10 s more).
STOP_GRACE = 35.0
POLL = 0.1


class Supervisor:
    """Run the programs of a suite until told to stop."""

    def __init__(self, suite: dict[str, object], run: RunDir, *, since: float | None) -> None:
        programs = suite.get("programs", [])
        assert isinstance(programs, list)
        self.title = str(suite.get("title", "the suite"))
        self.banner = str(suite.get("banner", ""))
        prepare = suite.get("prepare") or []
        assert isinstance(prepare, list)
        self.prepare = [dict(step) for step in prepare]
        self.children = [Child(Program.from_json(p), run.path) for p in programs]
        self.run = run
        self.since = since if since is not None else time.time()
        self.stopping = False
        self.hurry = False

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        if self.stopping:
            self.hurry = True  # a second Ctrl-C: no more waiting
        self.stopping = True

    def serve(self, ready_timeout: float, *, detached: bool) -> int:
        """Prepare, start, watch; return the exit status."""
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        self.run.write_state("starting", self._snapshot())
        if not run_prepare(self.prepare, self.run.path, stopping=lambda: self.stopping):
            self.run.write_state("failed", self._snapshot())
            return 1
        say(
            f"== prepared after {time.time() - self.since:.1f} s; starting "
            + ", ".join(c.name for c in self.children)
        )
        for child in self.children:
            child.start()
        status = self._watch(ready_timeout, detached=detached)
        self.run.write_state("stopping", self._snapshot())
        self._stop_all()
        self.run.write_state("stopped" if status == 0 else "failed", self._snapshot())
        return status

    def _watch(self, ready_timeout: float, *, detached: bool) -> int:
        deadline = time.monotonic() + ready_timeout
        announced = False
        next_probe = 0.0
        while not self.stopping:
            now = time.monotonic()
            for child in self.children:
                child.tend(now)
            if now >= next_probe:
                next_probe = now + 0.25
                for child in self.children:
                    child.probe(announced=announced)
                if not announced and all(c.ready for c in self.children):
                    announced = True
                    self._announce(detached=detached)
                if not announced and now > deadline:
                    self._report_not_ready(ready_timeout)
                    return 1
                self.run.write_state("ready" if announced else "starting", self._snapshot())
            time.sleep(POLL)
        return 0

    def _announce(self, *, detached: bool) -> None:
        elapsed = time.time() - self.since
        say(f"\n{self.title} is ready ({elapsed:.1f} s).")
        if self.banner:
            say(self.banner)
        say(f"  logs      {self.run.path}/<name>.log")
        if detached:
            say("Running in the background: `make down` stops it.")
        else:
            say("Press Ctrl-C to stop.")

    def _report_not_ready(self, ready_timeout: float) -> None:
        waiting = [c for c in self.children if not c.ready]
        say(f"error: not ready after {ready_timeout:.0f} s: {', '.join(c.name for c in waiting)}")
        for child in waiting:
            say(f"-- {child.name}: {child.program.ready_url} ({child.last_answer})")
            for line in child.log_tail(8):
                say(f"    {line}")

    def _stop_all(self) -> None:
        say(f"stopping {self.title} …")
        running = [c for c in reversed(self.children) if c.process is not None]
        for child in running:
            child.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while any(c.process is not None and c.process.poll() is None for c in running):
            if self.hurry or time.monotonic() > deadline:
                for child in running:
                    child.signal(signal.SIGKILL)
                break
            time.sleep(POLL)
        for child in running:
            status = child.process.wait() if child.process is not None else 0
            say(f"  {child.name} stopped ({describe_status(status)})")

    def _snapshot(self) -> dict[str, object]:
        return {c.name: c.describe() for c in self.children}


def _up(args: argparse.Namespace) -> int:
    run = RunDir(Path(args.run_dir))
    suite = json.loads(Path(args.suite).read_text())
    if not run.try_lock():
        owner = run.read_state()
        say(
            f"{suite.get('title', 'The suite')} is already running "
            f"(supervisor pid {run.owner()}, {owner.get('state', '?')}, "
            f"run directory {run.path})."
        )
        if owner.get("hint"):
            say(str(owner["hint"]))
        say("Stop it with Ctrl-C in its terminal, or `make down` if it runs in the background.")
        return 0
    busy = [p for p in suite.get("programs", []) if p.get("ready_url") and is_listening(p)]
    if busy:
        for p in busy:
            say(
                f"error: {p['name']} cannot start: {p['ready_url'].split('/')[2]} is already "
                "taken by a process this supervisor did not start (another checkout's suite?)."
            )
        return 1
    if args.detach:
        run.release()
        return _detach(args, run)
    run.hint = str(suite.get("hint", ""))
    supervisor = Supervisor(suite, run, since=args.since)
    return supervisor.serve(args.ready_timeout, detached=args.detached_child)


def _detach(args: argparse.Namespace, run: RunDir) -> int:
    """Start a supervisor in its own session; follow its log until it is ready or failed."""
    log = run.path / "supervisor.log"
    argv = [sys.executable, __file__, "up", args.suite, "--run-dir", args.run_dir]
    argv += ["--ready-timeout", str(args.ready_timeout), "--detached-child"]
    if args.since is not None:
        argv += ["--since", str(args.since)]
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    shown = 0
    while True:
        text = log.read_text(errors="replace")
        sys.stdout.write(text[shown:])
        sys.stdout.flush()
        shown = len(text)
        state = run.read_state()
        if daemon.poll() is not None:
            return daemon.returncode or 1
        if state.get("pid") == daemon.pid and state.get("state") == "ready":
            return 0
        time.sleep(0.2)


def _down(args: argparse.Namespace) -> int:
    run = RunDir(Path(args.run_dir))
    if run.try_lock():
        run.release()
        say("Nothing to stop: no supervisor is running here.")
        return 0
    pid = run.owner()
    if pid <= 0:
        say("error: a supervisor holds the lock but left no pid")
        return 1
    say(f"stopping the supervisor (pid {pid}) …")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE + 10
    while time.monotonic() < deadline:
        if run.try_lock():
            run.release()
            say("stopped.")
            return 0
        time.sleep(0.2)
    say(f"error: pid {pid} did not stop within {STOP_GRACE + 10:.0f} s")
    return 1


def _status(args: argparse.Namespace) -> int:
    run = RunDir(Path(args.run_dir))
    if run.try_lock():
        run.release()
        say("not running")
        return 3
    say(json.dumps(run.read_state(), indent=2, sort_keys=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run one command."""
    parser = argparse.ArgumentParser(prog="supervise.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="prepare and run a suite until stopped")
    up.add_argument("suite", help="the suite, as JSON")
    up.add_argument("--detach", action="store_true", help="return once ready; `down` stops it")
    up.add_argument("--detached-child", action="store_true", help=argparse.SUPPRESS)
    up.add_argument("--ready-timeout", type=float, default=120.0)
    up.add_argument("--since", type=float, default=None, help="epoch seconds the run began")
    for command in (up, sub.add_parser("down", help="stop a detached run")):
        command.add_argument("--run-dir", default=".run")
    sub.add_parser("status", help="print the running suite's state").add_argument(
        "--run-dir", default=".run"
    )
    args = parser.parse_args(argv)
    handlers = {"up": _up, "down": _down, "status": _status}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
