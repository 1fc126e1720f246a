"""The access log: one JSON line per answer, the shared formatter's shape, tokens redacted."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from bazaar.gateway.accesslog import AccessLog, Entry
from bazaar.shared.logging import JsonFormatter

ENTRY = Entry(
    method="GET",
    path="/v1/products/Bearer abc.def-ghi/ü",
    status=200,
    http_method="GET",
    route="/v1/products",
    duration_ms=1.25,
    client="203.0.113.9",
    trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    span_id="00f067aa0ba902b7",
    request_id='req-"quoted"\\ü',
)


def _stdout_like(name: str) -> tuple[logging.Logger, io.StringIO]:
    """A logger set up as configure_logging sets up the root: one JSON stream handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("gateway", "1.2.3"))
    logger = logging.Logger(name, logging.INFO)  # outside the manager: no parents
    logger.addHandler(handler)
    return logger, stream


async def test_direct_lines_are_exactly_what_the_shared_formatter_writes() -> None:
    direct, direct_out = _stdout_like("bazaar.access")
    AccessLog(direct).write(ENTRY)
    assert direct_out.getvalue() == ""  # written with the rest of this loop turn
    await asyncio.sleep(0)
    through, through_out = _stdout_like("bazaar.access")
    through.info("%s %s %s", ENTRY.method, ENTRY.path, 200, extra=ENTRY.fields())

    written, expected = json.loads(direct_out.getvalue()), json.loads(through_out.getvalue())
    assert direct_out.getvalue().count("\n") == 1
    assert list(written) == list(expected)  # same fields, same order
    stamp = datetime.fromisoformat(written.pop("time"))
    assert abs((datetime.fromisoformat(expected.pop("time")) - stamp).total_seconds()) < 1
    assert stamp.tzinfo == UTC
    assert written == expected
    assert written["message"] == "GET /v1/products/Bearer [redacted]ü 200"
    assert "abc.def" not in direct_out.getvalue()


async def test_lines_of_one_loop_turn_are_written_together_in_order() -> None:
    logger, out = _stdout_like("bazaar.access")
    access = AccessLog(logger)
    for status in (200, 404, 503):
        access.write(replace(ENTRY, path="/p", status=status))
    await asyncio.sleep(0)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["http_status"] for line in lines] == [200, 404, 503]
    assert [line["message"] for line in lines] == ["GET /p 200", "GET /p 404", "GET /p 503"]


async def test_under_another_logging_set_up_records_go_through_logging() -> None:
    logger, out = _stdout_like("bazaar.access")
    seen: list[logging.LogRecord] = []
    logger.handlers[0].addFilter(lambda record: seen.append(record) or True)
    AccessLog(logger).write(replace(ENTRY, path="/p", status=201))
    assert [r.getMessage() for r in seen] == ["GET /p 201"]  # at once, through the filter
    assert json.loads(out.getvalue())["request_id"] == ENTRY.request_id


async def test_a_disabled_access_log_writes_nothing() -> None:
    logger, out = _stdout_like("bazaar.access")
    logger.setLevel(logging.WARNING)
    AccessLog(logger).write(ENTRY)
    await asyncio.sleep(0)
    assert out.getvalue() == ""


async def test_each_answer_of_the_gateway_is_logged_with_its_ids(
    fakes, gateways, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = await fakes.upstream("catalog")
    client = await gateways.start({"catalog": catalog})
    with caplog.at_level(logging.INFO, logger="bazaar.access"):
        found = await client.get("/v1/products/42", headers={"X-Request-ID": "req-log-1"})
        missing = await client.get("/nowhere")
    records = [r for r in caplog.records if r.name == "bazaar.access"]
    assert [r.getMessage() for r in records] == ["GET /v1/products/42 200", "GET /nowhere 404"]
    first, second = records
    assert first.__dict__["request_id"] == "req-log-1" == found.headers["X-Request-ID"]
    assert first.__dict__["trace_id"] == found.headers["X-Trace-Id"]
    assert first.__dict__["http_route"] == "/v1/products"  # the route's template, no method
    assert first.__dict__["client"] == "127.0.0.1"
    assert first.__dict__["duration_ms"] >= 0
    assert second.__dict__["http_route"] == "unmatched"
    assert second.__dict__["http_status"] == 404 == missing.status
