"""The chaos soak's short form: every fault once under light load, on infrastructure of its own.

`bench/chaos.py --short` starts a PostgreSQL cluster, a Redis and a RabbitMQ node of its own
(never the machine's shared servers, which it restarts), the suite under the project's
supervisor, places and cancels orders through the gateway while it kills orders, catalog and
the gateway, stops catalog for 8 s and restarts each server, then checks the services' tables
and the events an outside queue received. About three minutes on the 2-core machine.

However the test ends (timeout, Ctrl-C, a failed assertion), no server of the soak survives
it: the soak is asked to stop (SIGTERM), then killed, then whatever it left is reaped.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bazaar.shared.testing.private import PG_BIN, can_run_private_node, private_workdir, reap

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from chaos_faults import FAULT_NAMES  # noqa: E402
from chaos_suite import reap_suite  # noqa: E402

#: The issue's names, in its order, then the soak's further targets (http5xx_other: shown only).
VERDICT = re.compile(
    r"^chaos: orders=(?P<orders>\d+) lost=(?P<lost>\d+) duplicated=(?P<duplicated>\d+) "
    r"oversold=(?P<oversold>\d+) stuck_pending=(?P<stuck_pending>\d+) "
    r"events_missing=(?P<events_missing>\d+) http500=(?P<http500>\d+) "
    r"max_recovery_s=(?P<max_recovery_s>[\d.]+|inf) unreleased=(?P<unreleased>\d+) "
    r"unexpected=(?P<unexpected>\d+) unfinished=(?P<unfinished>\d+) http5xx_other=\d+$",
    re.M,
)
STATES = re.compile(
    r"states: confirmed=(?P<confirmed>\d+) rejected=(?P<rejected>\d+) "
    r"cancelled=(?P<cancelled>\d+) pending=\d+ answered_202=(?P<answered_202>\d+)"
)
#: API.md: ready and serving within 3 s of a dependency coming back.
RECOVERY_TARGET_S = 3.0
SOAK_TIMEOUT_S = 900
#: SIGTERM lets the soak stop its suite and servers; this long, then its session is killed.
STOP_GRACE_S = 120


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the soak runs its servers as users postgres and rabbitmq (needs root)"
    absent = [] if (PG_BIN / "initdb").exists() else [str(PG_BIN / "initdb")]
    absent += [] if can_run_private_node() else ["a RabbitMQ node (rabbitmq-server, rabbitmqctl)"]
    absent += [] if shutil.which("redis-server") else ["redis-server"]
    return f"missing {', '.join(absent)}" if absent else None


def _stop(soak: subprocess.Popen[str]) -> str:
    """Ask the soak to stop (it stops its suite and servers); kill its session if it lingers."""
    with_grace = soak.poll() is None
    if with_grace:
        soak.send_signal(signal.SIGTERM)
    try:
        out, _ = soak.communicate(timeout=STOP_GRACE_S if with_grace else 5)
    except subprocess.TimeoutExpired as expired:
        os.killpg(soak.pid, signal.SIGKILL)
        try:  # a server it started in a session of its own may hold the pipe: never wait on it
            out, _ = soak.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            soak.wait(30)
            partial = expired.output or b""  # bytes, even in text mode
            out = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
    return out or ""


@pytest.mark.slow
@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
# The soak's own deadline, its stop and the reaping come before the test watchdog's.
@pytest.mark.watchdog_limit(SOAK_TIMEOUT_S + STOP_GRACE_S + 180)
def test_orders_survive_killed_processes_and_restarted_infrastructure_with_nothing_lost() -> None:
    work = private_workdir("bazaar-chaos-test-")
    soak = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--short", "--work", str(work)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    passed = False
    try:
        try:
            out, _ = soak.communicate(timeout=SOAK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the soak outlasted {SOAK_TIMEOUT_S} s:\n{_stop(soak)[-8000:]}")
        report = out[-8000:]  # the table, the details, the logs' digest
        verdict = VERDICT.search(out)
        assert verdict is not None, report
        counts = verdict.groupdict()
        assert int(counts.pop("orders")) > 0, report
        recovery = float(counts.pop("max_recovery_s"))
        assert {name: int(value) for name, value in counts.items()} == dict.fromkeys(counts, 0), (
            report
        )
        assert recovery <= RECOVERY_TARGET_S, report
        ran = re.findall(r"^  fault: (.+) …$", out, re.M)
        assert [next(n for n in FAULT_NAMES if ran_.startswith(n)) for ran_ in ran] == list(
            FAULT_NAMES
        ), report
        states = STATES.search(out)
        assert states is not None, report
        assert all(int(n) > 0 for n in states.groupdict().values()), (states.group(0), report)
        assert soak.returncode == 0, report
        passed = True
    finally:
        if soak.poll() is None:  # interrupted (Ctrl-C) or failed while the soak still runs
            _stop(soak)
        left = [*map(str, reap_suite(work)), *reap(work)]
        if passed and not left:
            shutil.rmtree(work, ignore_errors=True)
        else:
            sys.stderr.write(f"the soak's logs are kept in {work / 'logs'}; reaped {left}\n")
