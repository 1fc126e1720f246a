"""Private PostgreSQL, Redis and RabbitMQ servers: own directories, free ports.

The chaos soak restarts its infrastructure and the alarm tests raise broker alarms; neither
may touch what other runs share. Each server
here lives in a temporary directory, listens on 127.0.0.1 on a free port, and is stopped and
removed by `stop()`. `restart()` is the fault: stop, wait `down_seconds`, start again; it
returns once the server answers again.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


#: Ports handed out by this process: a server restarted later binds its port again.
_GIVEN: set[int] = set()
#: Where free_port() looks: above the well-known ports and 8000-8003, below the ephemeral range.
LOWEST_PORT = 20000
#: A session leader's pid in a server's directory, for reap() when the run died.
SESSION_FILE = "session.pid"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port nothing is bound to, outside the ephemeral range and never handed out before.

    An ephemeral port can be taken by any outgoing connection while its server is down for a
    restart; below the range only a server asking for that very port can take it.
    """
    high = _ephemeral_low()
    for _ in range(1000):
        port = random.randrange(LOWEST_PORT, max(high, LOWEST_PORT + 1000))
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError(f"no free port in {LOWEST_PORT}-{high}")


def note_session(directory: Path, pid: int) -> None:
    """Remember a server's session (its leader's pid) so reap() can end it."""
    (directory / SESSION_FILE).write_text(str(pid))


def signal_session(pid: int, signum: int) -> bool:
    """Signal the session `pid` leads, if it still does; whether it did."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:  # still the session we started, not a reused pid
            os.killpg(pid, signum)
            return True
    return False


def reap(work: Path) -> list[str]:
    """End every server a run left under `work` (its owner was killed); say what was ended."""
    ended = []
    for noted in work.glob(f"*/{SESSION_FILE}"):
        with contextlib.suppress(OSError, ValueError):
            if signal_session(int(noted.read_text()), signal.SIGKILL):
                ended.append(str(noted.parent))
    for noted in work.glob("*/data/postmaster.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # SIGQUIT: PostgreSQL's immediate shutdown (the postmaster ends its backends).
            os.kill(int(noted.read_text().split()[0]), signal.SIGQUIT)
            ended.append(str(noted.parent))
    return ended


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def can_run_private_node() -> bool:
    """Whether this machine can start a private RabbitMQ node (server and rabbitmqctl here)."""
    return (RABBIT_BIN / "rabbitmq-server").exists() and (RABBIT_BIN / "rabbitmqctl").exists()


def private_workdir(prefix: str) -> Path:
    """A fresh directory the servers' own users can reach (pytest's tmp_path is private)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    work.chmod(0o755)
    return work


def _wait(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.1)


#: How long a killed process may take to be gone (SIGKILL cannot be ignored; a process in
#: uninterruptible sleep can still outlive it).
KILLED_SECONDS = 30
#: How long one run of a server's control tool (initdb, pg_ctl) may take.
TOOL_SECONDS = 180


def _end(process: subprocess.Popen[bytes], grace: float) -> None:
    """Wait for a process asked to stop; kill its whole session if it outstays `grace`."""
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        try:
            process.wait(KILLED_SECONDS)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"process {process.pid} ({process.args!r}) outlived SIGKILL by {KILLED_SECONDS} s"
            ) from None


def _run_tool(argv: list[str], cwd: Path) -> None:
    """Run a server's control tool; fail with its output if it fails or outstays TOOL_SECONDS."""
    try:
        subprocess.run(argv, check=True, capture_output=True, cwd=cwd, timeout=TOOL_SECONDS)
    except subprocess.TimeoutExpired as expired:
        raise RuntimeError(
            f"{' '.join(argv)} did not end within {TOOL_SECONDS} s; "
            f"stdout: {expired.stdout!r}; stderr: {expired.stderr!r}"
        ) from None


class _Restartable:
    """A server the soak can take down for a while: `restart()` is stop, wait, start."""

    def start(self) -> None:
        """Start the server and wait until it answers."""
        raise NotImplementedError

    def _halt(self) -> None:
        raise NotImplementedError

    def halt(self) -> None:
        """Stop the server keeping its data: `start()` brings it back on the same port."""
        self._halt()

    def restart(self, down_seconds: float) -> None:
        """Halt the server (its clients are cut), stay down a moment, start it again."""
        self._halt()
        time.sleep(down_seconds)
        self.start()


def _owned_dir(path: Path, user: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.chown(path, user, user)
    return path


class PrivatePostgres:
    """A throwaway PostgreSQL 15 cluster run as user postgres (trust auth, fsync off)."""

    def __init__(self, work: Path) -> None:
        self.dir = _owned_dir(work / "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}"

    def _ctl(self, *args: str) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=300"
        )
        _run_tool(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.data),
             "-l", str(self.dir / "server.log"), "-o", options, "-w", "-t", "60", *args],
            self.dir,
        )  # fmt: skip

    def start(self) -> None:
        """Create the cluster (first time) and start it."""
        if not self.data.exists():
            _run_tool(
                ["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(self.data),
                 "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
                self.dir,
            )  # fmt: skip
        self._ctl("start")

    def restart(self, down_seconds: float) -> None:
        """Stop (fast: sessions are cut), stay down a moment, start again."""
        self._ctl("-m", "fast", "stop")
        time.sleep(down_seconds)
        self._ctl("start")

    def stop(self) -> None:
        """Stop the server (immediately) and remove its directory."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis(_Restartable):
    """A redis-server without persistence, in its own session."""

    def __init__(self, work: Path) -> None:
        self.dir = work / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start redis-server and wait until it accepts connections."""
        with (self.dir / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        note_session(self.dir, self.process.pid)
        _wait(lambda: _answers(self.port), "redis", 30)

    def _halt(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            _end(self.process, 10)

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        self._halt()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRabbit(_Restartable):
    """A RabbitMQ node of its own (name, ports, mnesia, logs, no plugins), run as rabbitmq."""

    def __init__(self, work: Path, run_id: str, prefix: str = "chaos") -> None:
        self.dir = _owned_dir(work / "rabbitmq", "rabbitmq")
        self.node = f"{prefix}-{run_id}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.process: subprocess.Popen[bytes] | None = None
        for name in ("enabled_plugins", "rabbitmq.conf", "rabbitmq-env.conf"):
            (self.dir / name).write_text("")
        for sub in ("mnesia", "log"):
            _owned_dir(self.dir / sub, "rabbitmq")

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": "/var/lib/rabbitmq",  # the node's and the CLI's Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run rabbitmqctl against this node (as rabbitmq, with the node's cookie)."""
        return subprocess.run(
            ["runuser", "-u", "rabbitmq", "--", str(RABBIT_BIN / "rabbitmqctl"), "-q",
             "-n", self.node, *args],
            env=self._env(), capture_output=True, text=True, timeout=timeout, cwd=self.dir,
            check=False,
        )  # fmt: skip

    def start(self) -> None:
        """Start the node in the foreground of its own session; wait until it serves AMQP."""
        with (self.dir / "console.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["runuser", "-u", "rabbitmq", "--", str(RABBIT_BIN / "rabbitmq-server")],
                env=self._env(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.dir, start_new_session=True,
            )  # fmt: skip
        note_session(self.dir, self.process.pid)
        deadline = time.monotonic() + 120
        while self.ctl("await_startup", "--timeout", "60", timeout=90).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ node {self.node} did not start; see {self.dir}")
            time.sleep(0.3)
        _wait(lambda: _answers(self.port), "rabbitmq's AMQP listener", 30)

    def _halt(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            # A shutdown that does not answer is no reason to keep the node: _end kills it.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.ctl("shutdown", timeout=60)
        _end(self.process, 30)

    def stop(self) -> None:
        """Shut the node down and remove its directory."""
        self._halt()
        shutil.rmtree(self.dir, ignore_errors=True)
