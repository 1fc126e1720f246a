"""JSON logs: one object per line, with trace, span and request ids, and nothing secret."""

from __future__ import annotations

import importlib.metadata
import io
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from bazaar.shared.logging import JsonFormatter, configure_logging, utc_time
from bazaar.shared.telemetry import setup_tracing
from bazaar.shared.tracecontext import request_id_var
from bazaar.shared.version import service_version

FIELDS = {
    "time",
    "level",
    "logger",
    "message",
    "service",
    "version",
    "trace_id",
    "span_id",
    "request_id",
}
BEARER_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJl"


class Capture:
    """A logger whose records are formatted by JsonFormatter into a buffer."""

    def __init__(self, logger: logging.Logger, stream: io.StringIO) -> None:
        self.logger = logger
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def entries(self) -> list[dict[str, Any]]:
        lines = self.text.splitlines()
        assert self.text.endswith("\n")
        return [json.loads(line) for line in lines]


@pytest.fixture
def capture() -> Iterator[Capture]:
    logger = logging.getLogger(f"bazaar.test.logging.{uuid.uuid4().hex[:8]}")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("widgets", "9.8.7"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield Capture(logger, stream)
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_each_record_is_one_json_object_on_one_line(capture: Capture) -> None:
    capture.logger.info("first")
    capture.logger.warning("second\nspans\nlines")
    try:
        raise ValueError("with a traceback")
    except ValueError:
        capture.logger.exception("third")

    entries = capture.entries()

    assert [e["message"] for e in entries] == ["first", "second\nspans\nlines", "third"]
    assert "ValueError: with a traceback" in entries[2]["exception"]


def test_a_record_carries_service_version_level_logger_and_utc_time(capture: Capture) -> None:
    capture.logger.warning("stock low for %s", "sku-1")

    [entry] = capture.entries()

    assert set(entry) >= FIELDS
    assert entry["message"] == "stock low for sku-1"
    assert entry["level"] == "warning"
    assert entry["logger"] == capture.logger.name
    assert entry["service"] == "widgets"
    assert entry["version"] == "9.8.7"
    logged_at = datetime.fromisoformat(entry["time"])
    assert logged_at.utcoffset() is not None and logged_at.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - logged_at).total_seconds()) < 60


def test_outside_a_span_and_a_request_the_ids_are_null(capture: Capture) -> None:
    capture.logger.info("idle")

    [entry] = capture.entries()

    assert entry["trace_id"] is None
    assert entry["span_id"] is None
    assert entry["request_id"] is None


def test_inside_a_span_the_record_carries_its_trace_and_span_ids(capture: Capture) -> None:
    tracer = setup_tracing("test", "0", None).get_tracer("test_logging")

    with tracer.start_as_current_span("work") as span:
        capture.logger.info("inside")
    capture.logger.info("after")

    inside, after = capture.entries()
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert after["trace_id"] is None


def test_inside_a_request_the_record_carries_its_request_id(capture: Capture) -> None:
    token = request_id_var.set("req-42")
    try:
        capture.logger.info("serving")
    finally:
        request_id_var.reset(token)

    [entry] = capture.entries()

    assert entry["request_id"] == "req-42"


def test_extra_fields_are_logged_and_secret_ones_redacted(capture: Capture) -> None:
    capture.logger.info(
        "login",
        extra={
            "user_id": "user-1",
            "attempt": 2,
            "password": "hunter2-hunter2",
            "token": "refresh-abc123",
            "secret": "client-secret-xyz",
            "authorization": f"Bearer {BEARER_TOKEN}",
            "access_token": "at-987654",
            "client_secret": "cs-555777",
        },
    )

    [entry] = capture.entries()

    assert entry["user_id"] == "user-1"
    assert entry["attempt"] == 2
    for name in ("password", "token", "secret", "authorization", "access_token", "client_secret"):
        assert entry[name] == "[redacted]"
    for value in ("hunter2", "refresh-abc123", "client-secret-xyz", "at-987654", "cs-555777"):
        assert value not in capture.text
    assert BEARER_TOKEN not in capture.text


def test_an_empty_extra_field_name_is_logged_and_private_ones_are_not(capture: Capture) -> None:
    capture.logger.info("odd fields", extra={"": "empty name", "_private": "internal"})

    [entry] = capture.entries()

    assert entry[""] == "empty name"
    assert "_private" not in entry


@pytest.mark.parametrize(
    "message",
    [
        f"calling catalog with Authorization: Bearer {BEARER_TOKEN}",
        f"header was 'bearer {BEARER_TOKEN}' and it failed",
        f"BEARER {BEARER_TOKEN}",
    ],
)
def test_a_bearer_token_inside_a_message_is_redacted(capture: Capture, message: str) -> None:
    capture.logger.info(message)

    [entry] = capture.entries()

    assert BEARER_TOKEN not in capture.text
    assert "[redacted]" in entry["message"]


def test_a_bearer_token_passed_as_an_argument_is_redacted(capture: Capture) -> None:
    capture.logger.info("got %s", f"Bearer {BEARER_TOKEN}")

    assert BEARER_TOKEN not in capture.text


def test_a_bearer_token_inside_a_logged_exception_is_redacted(capture: Capture) -> None:
    try:
        raise PermissionError(f"upstream refused Authorization: Bearer {BEARER_TOKEN}")
    except PermissionError:
        capture.logger.exception("call failed")

    [entry] = capture.entries()

    assert "PermissionError" in entry["exception"]
    assert BEARER_TOKEN not in capture.text


@pytest.mark.parametrize(
    "created",
    [0.0, 1_765_000_000.0, 1_765_000_000.0005, 1_765_000_000.9995, 1_765_000_000.9999996, 1.5e9],
)
def test_the_time_is_written_as_datetime_writes_it_in_utc_with_milliseconds(
    created: float,
) -> None:
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert utc_time(created) == expected


def test_configured_logs_carry_the_installed_version_of_the_service(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, access = logging.getLogger(), logging.getLogger("uvicorn.access")
    handlers, level, disabled = root.handlers[:], root.level, access.disabled
    try:
        configure_logging("gateway", "INFO")
        logging.getLogger("bazaar.test.version").warning("which version?")
        [line] = capsys.readouterr().out.splitlines()
    finally:
        root.handlers[:], access.disabled = handlers, disabled
        root.setLevel(level)

    entry = json.loads(line)
    assert entry["service"] == "gateway"
    # The same function as /version and bazaar_build_info: the package metadata's version.
    assert entry["version"] == importlib.metadata.version("bazaar-gateway")
    assert entry["version"] == service_version("gateway")
