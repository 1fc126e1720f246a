"""`serve`: started before it listens; on SIGTERM in-flight requests finish, the lifespan
closes, the exit status is 0; the failures (startup, port taken) are one JSON line and 1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from bazaar.shared.cli import KEEP_ALIVE_SECONDS
from bazaar.shared.testing.postgres import DatabaseFactory
from bazaar.shared.testing.processes import communicate, join, kill, read_lines_until
from bazaar.shared.testing.server import free_port

SERVICE = Path(__file__).with_name("serve_slow_service.py")
#: How long a served process may take to start, or to end once told to.
PROCESS_SECONDS = 60


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(database_factory: DatabaseFactory) -> str:
    return await database_factory.create("serve_shutdown")


def spawn(database_url: str, port: int | None = None, **env: str) -> subprocess.Popen[bytes]:
    """Serve the slow service in a process of its own (on `port`, else a free one)."""
    settings = {
        "SLOWSVC_DATABASE_URL": database_url,
        "SLOWSVC_PORT": str(port or free_port()),
        "SLOWSVC_ENVIRONMENT": "test",
    }
    return subprocess.Popen(
        [sys.executable, str(SERVICE)],
        env={**os.environ, **settings, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_served(proc: subprocess.Popen[bytes], base: str) -> None:
    """Return once `base` answers its health probe (fail if the process ended first)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            kill(proc)
            _, stderr = communicate(proc, 10, "serve, killed as it did not start")
            raise AssertionError(f"serve did not start: {stderr.decode()}")
        time.sleep(0.1)


def start(database_url: str, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """Serve the slow service in a process of its own; return it and its base URL."""
    port = free_port()
    proc = spawn(database_url, port, **env)
    base = f"http://127.0.0.1:{port}"
    wait_served(proc, base)
    return proc, base


def read_until(proc: subprocess.Popen[bytes], message: str) -> list[dict[str, object]]:
    """The log lines up to the one saying `message` (the process's stdout read so far)."""
    raw = read_lines_until(
        proc, lambda line: json.loads(line)["message"] == message, PROCESS_SECONDS,
        f"serve to log {message!r}",
    )  # fmt: skip
    return [json.loads(line) for line in raw]


def kill_if_running(proc: subprocess.Popen[bytes]) -> None:
    kill(proc)


def finish(proc: subprocess.Popen[bytes]) -> tuple[list[dict[str, object]], str]:
    """Wait for the process to end: its log lines (JSON, every one) and its stderr."""
    try:
        stdout, stderr = communicate(proc, PROCESS_SECONDS, "serve to exit")
    finally:
        kill_if_running(proc)
    return [json.loads(line) for line in stdout.decode().splitlines()], stderr.decode()


def request_in_background(url: str) -> tuple[threading.Thread, list[httpx.Response]]:
    """GET `url` on a thread of its own; its answer lands in the list once it comes."""
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(httpx.get(url, timeout=30)))
    thread.start()
    return thread, answers


def assert_cut_short_answer(answer: httpx.Response) -> None:
    """A request a shutdown cut short: a 503 problem telling the client to retry."""
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("/service-unavailable")
    assert answer.headers["retry-after"] == "1"
    assert answer.headers["connection"] == "close"
    assert answer.headers["server"] == "bazaar"
    assert answer.headers["x-request-id"] and answer.headers["x-trace-id"]


def test_sigterm_lets_the_request_in_flight_finish_then_closes_and_exits_0(
    database_url: str,
) -> None:
    proc, base = start(database_url)
    try:
        slow, answers = request_in_background(f"{base}/slow?seconds=2")
        time.sleep(0.5)  # the slow request is in flight
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        try:
            refused = httpx.get(f"{base}/healthz", timeout=2)
        except httpx.TransportError:
            refused = None
        join(slow, 60, "the slow request's answer")
        stdout, stderr = communicate(proc, PROCESS_SECONDS, "serve to exit after SIGTERM")
    finally:
        kill_if_running(proc)
    assert refused is None, "no new connection is taken once shutting down"
    [answer] = answers
    assert answer.status_code == 200 and answer.json() == {"slept": 2.0}
    assert proc.returncode == 0, stderr.decode()
    lines = [json.loads(line) for line in stdout.decode().splitlines()]  # JSON, every line
    messages = [entry["message"] for entry in lines]
    served = messages.index("GET /slow 200")
    assert messages.index("slow service resources closed") > served
    assert all(entry["service"] == "slow" for entry in lines)


def test_a_request_still_running_when_the_grace_ends_is_cancelled_and_the_exit_is_clean(
    database_url: str,
) -> None:
    proc, base = start(database_url, SLOWSVC_GRACE="1")
    try:
        slow, answers = request_in_background(f"{base}/slow?seconds=60")
        time.sleep(0.5)
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = communicate(proc, PROCESS_SECONDS, "serve to exit after SIGTERM")
        took = time.monotonic() - stopped
        join(slow, 60, "the slow request's answer")
    finally:
        kill_if_running(proc)
    assert proc.returncode == 0, stderr.decode()
    assert took < 10, "the request was cut at the grace's end, not waited for"
    messages = [json.loads(line)["message"] for line in stdout.decode().splitlines()]
    assert "cancelling 1 requests still running at the deadline" in messages
    assert messages.index("slow service resources closed") > messages.index(
        "cancelling 1 requests still running at the deadline"
    )
    # Answered by the service, not granian's bare 500 (nor its traceback in the log).
    [answer] = answers
    assert_cut_short_answer(answer)
    assert "GET /slow 503" in messages
    assert not [m for m in stdout.decode().splitlines() if '"level": "error"' in m]
    assert stderr == b""


def test_keep_alive_connections_are_reused_and_closed_after_five_idle_seconds(
    database_url: str,
) -> None:
    proc, base = start(database_url)
    try:
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            for _ in range(2):  # the same connection serves one request after the other
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n\r\n")
                head = conn.recv(4096).split(b"\r\n\r\n")[0].lower()
                assert head.startswith(b"http/1.1 200")
                assert b"\r\nserver: bazaar\r\n" in head + b"\r\n"  # no software named
                assert b"granian" not in head
            idle = time.monotonic()
            assert conn.recv(4096) == b""  # closed by the server once idle
            waited = time.monotonic() - idle
    finally:
        proc.send_signal(signal.SIGTERM)
        communicate(proc, PROCESS_SECONDS, "serve to exit after SIGTERM")
    assert KEEP_ALIVE_SECONDS - 1 < waited < KEEP_ALIVE_SECONDS + 3


def test_a_second_signal_cuts_the_requests_in_flight_short_at_once(database_url: str) -> None:
    proc, base = start(database_url)  # a grace of 20 s
    try:
        slow, answers = request_in_background(f"{base}/slow?seconds=60")
        time.sleep(0.5)
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)  # a second signal, as a second Ctrl-C
        lines, stderr = finish(proc)
        took = time.monotonic() - stopped
        join(slow, 60, "the slow request's answer")
    finally:
        kill_if_running(proc)
    assert proc.returncode == 0, stderr
    assert took < 10, "the second signal did not wait for the grace"
    messages = [entry["message"] for entry in lines]
    cut = messages.index("cancelling 1 requests still running on a second signal")
    assert messages.index("GET /slow 503") > cut
    assert messages.index("slow service resources closed") > cut
    [answer] = answers
    assert_cut_short_answer(answer)
    assert stderr == ""


def test_the_port_is_bound_only_once_the_startup_is_done(database_url: str) -> None:
    port = free_port()
    proc = spawn(database_url, port, SLOWSVC_STARTUP="3")
    try:
        read_until(proc, "slow service starting")
        time.sleep(1)
        # uvicorn refused connections until started; a server listening already would
        # take this one and leave it waiting for the startup.
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            refused = False
        except ConnectionRefusedError:
            refused = True
        wait_served(proc, f"http://127.0.0.1:{port}")
        proc.send_signal(signal.SIGTERM)
        lines, stderr = finish(proc)
    finally:
        kill_if_running(proc)
    assert refused, "a connection was accepted before the startup was done"
    assert proc.returncode == 0, stderr
    messages = [entry["message"] for entry in lines]
    assert messages.index(f"Listening at: http://127.0.0.1:{port}") > messages.index(
        "slow service started"
    )


def test_a_startup_that_fails_exits_1_with_one_json_error_line(database_url: str) -> None:
    proc = spawn(database_url, SLOWSVC_FAIL="1")
    lines, stderr = finish(proc)
    assert proc.returncode == 1
    assert stderr == ""
    [error] = [entry for entry in lines if entry["level"] == "error"]
    assert error["message"] == "could not start: the slow service could not start"
    assert "RuntimeError: the slow service could not start" in str(error["exception"])
    assert not any(str(entry["message"]).startswith("Listening") for entry in lines)


def test_a_signal_during_the_startup_stops_it_and_exits_0(database_url: str) -> None:
    proc = spawn(database_url, SLOWSVC_STARTUP="60")
    try:
        read_until(proc, "slow service starting")
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        lines, stderr = finish(proc)
        took = time.monotonic() - stopped
    finally:
        kill_if_running(proc)
    assert proc.returncode == 0, stderr
    assert took < 10, "the startup was waited for"
    messages = [entry["message"] for entry in lines]
    assert "stopped before the service had started" in messages
    assert not any(message.startswith("Listening") for message in messages)
    assert stderr == ""


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "SO_REUSEPORT"])
def test_a_port_already_in_use_exits_1_with_one_json_error_line(
    database_url: str, reuse_port: bool
) -> None:
    with socket.socket() as taken:
        # SO_REUSEPORT, as another granian's: it would share the port with this one.
        taken.setsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEPORT if reuse_port else socket.SO_REUSEADDR, 1
        )
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = spawn(database_url, port)
        lines, stderr = finish(proc)
    assert proc.returncode == 1
    assert stderr == "", "no traceback"
    [error] = [entry for entry in lines if entry["level"] == "error"]
    assert str(error["message"]).startswith(f"could not serve on 127.0.0.1:{port}: ")
    assert "in use" in str(error["message"])
    messages = [entry["message"] for entry in lines]
    assert messages.index("slow service resources closed") > messages.index(error["message"])


def test_sigterm_ends_an_open_stream_cleanly_at_once_through_the_stop_notice(
    database_url: str,
) -> None:
    # A stream never finishes by itself: without the notice it would run the whole grace and
    # then be cut mid-body. The server sets the app's stop notice as it stops accepting.
    proc, base = start(database_url)
    received: list[bytes] = []
    ended: list[float] = []
    try:
        with httpx.stream("GET", f"{base}/stream", timeout=30) as answer:
            lines = answer.iter_lines()
            received.append(next(lines).encode())
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            for line in lines:  # raises if cut mid-body
                received.append(line.encode())
                # The stream ticks until the notice: without one it would run on for ever.
                assert time.monotonic() - signalled < PROCESS_SECONDS, "the stream never ended"
            ended.append(time.monotonic() - signalled)
    finally:
        _, stderr = finish(proc)
    assert received[0] == b"first" and received[-1] == b"bye"
    assert ended[0] < 2.0, f"the stream ran {ended[0]:.1f} s after SIGTERM"
    assert proc.returncode == 0, stderr
