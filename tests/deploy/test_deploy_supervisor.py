"""The supervisor behind `make up`, run on real processes: tiny HTTP children that misbehave."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bazaar.shared.testing.processes import kill
from bazaar.shared.testing.server import free_port

SUPERVISE = Path(__file__).resolve().parents[2] / "scripts" / "supervise.py"

# A service stand-in: /readyz answers 200 (503 when told "never-ready"); SIGTERM is logged
# to a file and ends it cleanly; "crash-once" fails its first start with status 3.
CHILD = """
import http.server, pathlib, signal, sys
port, mode, marks = int(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
if mode == "crash-once" and not (marks / "crashed").exists():
    (marks / "crashed").touch()
    print("boom: the first start fails", flush=True)
    sys.exit(3)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503 if mode == "never-ready" else 200)
        self.end_headers()
    def log_message(self, *args):
        pass
def stop(signum, frame):
    (marks / f"terminated-{port}").touch()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def _suite(tmp: Path, *modes: str, prepare: list[dict[str, object]] | None = None) -> Path:
    (tmp / "child.py").write_text(CHILD)
    programs = []
    for i, mode in enumerate(modes):
        port = free_port()
        programs.append(
            {
                "name": f"svc{i}",
                "argv": [sys.executable, str(tmp / "child.py"), str(port), mode, str(tmp)],
                "ready_url": f"http://127.0.0.1:{port}/readyz",
            }
        )
    suite = {
        "title": "Fake suite",
        "banner": "BANNER: the fake suite at its URL",
        "hint": "gateway http://fake",
        "prepare": prepare or [],
        "programs": programs,
    }
    path = tmp / "suite.json"
    path.write_text(json.dumps(suite))
    return path


def _command(*args: str) -> list[str]:
    return [sys.executable, str(SUPERVISE), *args]


class Running:
    """A supervisor started by a test, its output collected in a file."""

    def __init__(self, suite: Path, run_dir: Path, *extra: str) -> None:
        self.output = run_dir.parent / f"{run_dir.name}-out.txt"
        self.run_dir = run_dir
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                _command("up", str(suite), "--run-dir", str(run_dir), *extra),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        """Everything it printed so far."""
        return self.output.read_text()

    def wait_for(self, needle: str, timeout: float = 15.0) -> str:
        """Wait until its output contains `needle`."""
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.process.poll() is None, f"supervisor exited early:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {needle!r} in:\n{self.text()}"
            time.sleep(0.05)
        return self.text()

    def child_pids(self) -> list[int]:
        """The pids of the programs, from the state file."""
        state = json.loads((self.run_dir / "supervisor.json").read_text())
        return [p["pid"] for p in state["programs"].values() if p["pid"]]


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Running]]:
    """Supervisors a test starts; any still running at the end are killed, with their tree."""
    runs: list[Running] = []
    yield runs
    for run in runs:
        if run.process.poll() is None:
            run.process.send_signal(signal.SIGINT)
            try:
                run.process.wait(30)
            except subprocess.TimeoutExpired:
                for pid in run.child_pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                kill(run.process)
                raise AssertionError(
                    f"the supervisor did not stop 30 s after SIGINT (killed):\n{run.text()}"
                ) from None


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie awaiting its parent's wait counts as gone.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_a_crashed_program_is_reported_and_restarted(
    tmp_path: Path, started: list[Running]
) -> None:
    run = Running(_suite(tmp_path, "serve", "crash-once"), tmp_path / "run")
    started.append(run)
    text = run.wait_for("BANNER")
    assert "svc1 exited (status 3)" in text
    assert "boom: the first start fails" in text  # the report shows its log's last lines
    assert "restarting in" in text
    state = json.loads((tmp_path / "run" / "supervisor.json").read_text())
    assert state["programs"]["svc1"]["restarts"] == 1
    assert state["state"] == "ready"


def test_sigint_stops_every_program_with_sigterm_and_exits_cleanly(
    tmp_path: Path, started: list[Running]
) -> None:
    run = Running(_suite(tmp_path, "serve", "serve"), tmp_path / "run")
    started.append(run)
    run.wait_for("Press Ctrl-C to stop.")
    pids = run.child_pids()
    assert len(pids) == 2
    run.process.send_signal(signal.SIGINT)
    assert run.process.wait(30) == 0
    assert all(_gone(pid) for pid in pids)
    assert len(list(tmp_path.glob("terminated-*"))) == 2  # each got SIGTERM, none SIGKILL
    assert "svc0 stopped (status 0)" in run.text()


def test_a_second_up_says_the_suite_is_already_running(
    tmp_path: Path, started: list[Running]
) -> None:
    suite = _suite(tmp_path, "serve")
    run = Running(suite, tmp_path / "run")
    started.append(run)
    run.wait_for("BANNER")
    again = subprocess.run(
        _command("up", str(suite), "--run-dir", str(tmp_path / "run")),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert again.returncode == 0
    assert f"already running (supervisor pid {run.process.pid}" in again.stdout
    assert "gateway http://fake" in again.stdout
    assert run.process.poll() is None  # the first one is untouched


def test_a_port_taken_by_a_stranger_is_named_instead_of_a_crash_loop(tmp_path: Path) -> None:
    suite = _suite(tmp_path, "serve")
    url = json.loads(suite.read_text())["programs"][0]["ready_url"]
    port = int(url.split(":")[2].split("/")[0])
    with socket.create_server(("127.0.0.1", port)):
        done = subprocess.run(
            _command("up", str(suite), "--run-dir", str(tmp_path / "run")),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert f"127.0.0.1:{port} is already taken" in done.stdout


def test_a_program_never_ready_fails_the_start_with_its_answer_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    suite = _suite(tmp_path, "serve", "never-ready")
    run_dir = tmp_path / "run"
    done = subprocess.run(
        _command("up", str(suite), "--run-dir", str(run_dir), "--ready-timeout", "2"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "not ready after 2 s: svc1" in done.stdout
    assert "HTTP 503" in done.stdout
    state = json.loads((run_dir / "supervisor.json").read_text())
    assert state["state"] == "failed"
    assert len(list(tmp_path.glob("terminated-*"))) == 2


def test_a_failing_prepare_step_stops_before_anything_starts_and_shows_the_hint(
    tmp_path: Path,
) -> None:
    step = {
        "label": "db: migrations",
        "argv": [sys.executable, "-c", "import sys; sys.exit('cannot connect to 127.0.0.1:1')"],
        "hint": "is PostgreSQL running?",
    }
    suite = _suite(tmp_path, "serve", prepare=[step])
    done = subprocess.run(
        _command("up", str(suite), "--run-dir", str(tmp_path / "run")),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "== db: migrations" in done.stdout
    assert "cannot connect to 127.0.0.1:1" in done.stdout
    assert "hint: is PostgreSQL running?" in done.stdout
    assert not (tmp_path / "run" / "svc0.log").exists()


def test_detach_returns_once_ready_and_down_stops_the_whole_tree(tmp_path: Path) -> None:
    suite = _suite(tmp_path, "serve", "serve")
    run_dir = tmp_path / "run"
    up = subprocess.run(
        _command("up", str(suite), "--run-dir", str(run_dir), "--detach"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 0, up.stdout
    assert "BANNER" in up.stdout
    assert "`make down` stops it" in up.stdout
    state = json.loads((run_dir / "supervisor.json").read_text())
    pids = [p["pid"] for p in state["programs"].values()]
    status = subprocess.run(
        _command("status", "--run-dir", str(run_dir)), capture_output=True, timeout=30
    )
    assert status.returncode == 0
    down = subprocess.run(
        _command("down", "--run-dir", str(run_dir)), capture_output=True, text=True, timeout=60
    )
    assert down.returncode == 0
    assert "stopped." in down.stdout
    assert all(_gone(pid) for pid in [*pids, int(state["pid"])])
    status = subprocess.run(
        _command("status", "--run-dir", str(run_dir)), capture_output=True, timeout=30
    )
    assert status.returncode == 3
    again = subprocess.run(
        _command("down", "--run-dir", str(run_dir)), capture_output=True, text=True, timeout=30
    )
    assert "Nothing to stop" in again.stdout


def test_prepare_chains_keep_their_order_and_a_failure_stops_the_other_chains(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "first-done"
    steps = [
        {"chain": "a", "argv": [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]},
        {
            "chain": "a",
            "label": "a: second",
            "argv": [
                sys.executable,
                "-c",
                f"import os, sys; sys.exit(not os.path.exists({str(marker)!r}))",
            ],
        },
        {
            "chain": "b",
            "label": "b: slow",
            "argv": [sys.executable, "-c", "import time; time.sleep(60)"],
        },
        {
            "chain": "c",
            "label": "c: fails",
            "argv": [sys.executable, "-c", "import time, sys; time.sleep(3); sys.exit(4)"],
        },
    ]
    suite = _suite(tmp_path, "serve", prepare=steps)
    began = time.monotonic()
    done = subprocess.run(
        _command("up", str(suite), "--run-dir", str(tmp_path / "run")),
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert time.monotonic() - began < 30  # b's minute of sleep was cut short
    assert done.returncode == 1
    assert "failed with status 4" in done.stdout
    assert "== a: second" in done.stdout  # ran after the first step of its chain, and passed
    assert "with status 1" not in done.stdout
