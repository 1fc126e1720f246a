"""One JSON access-log line per answer, rendered directly when logging is set up as usual.

Through `logging`, a line costs a LogRecord, the shared JsonFormatter (OpenTelemetry context
lookups, a regex per field, json.dumps) and a flush: tens of µs, the most expensive step of
a proxied request. When the `bazaar.access` records would end in the one stdout handler that
`configure_logging` installs, the gateway writes the very line that handler would write
(same fields, same order, same redaction) from one template, and writes the lines of one
event-loop turn together. Under any other logging set-up (tests' caplog, extra handlers,
filters) the record goes through `logging` as usual.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, TextIO

from bazaar.shared.logging import JsonFormatter, redact_text

_json: Any = encode_basestring  # the C escaper json.dumps(..., ensure_ascii=False) uses


def _text(text: str) -> str:
    """A string's JSON, redacted as the shared formatter redacts it."""
    if "bearer" in text.lower():  # redact_text changes nothing without it
        text = redact_text(text)
    escaped: str = _json(text)
    return escaped


@dataclass(slots=True)  # not frozen: a frozen dataclass is slower to build, once per request
class Entry:
    """What the access log says about one answer (ids and route are the gateway's own)."""

    method: str  # as the client sent it
    path: str
    status: int
    http_method: str  # a known method or _OTHER
    route: str
    duration_ms: float
    client: str
    trace_id: str
    span_id: str
    request_id: str

    def fields(self) -> dict[str, Any]:
        """The record's extra fields, in the order the shared formatter writes them."""
        return {
            "http_method": self.http_method,
            "http_route": self.route,
            "http_status": self.status,
            "duration_ms": self.duration_ms,
            "client": self.client,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "request_id": self.request_id,
        }


class AccessLog:
    """Writes the access log of the gateway (`bazaar.access`)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._pending: list[str] = []
        self._turn_handler: logging.StreamHandler[TextIO] | None = None
        self._second = -1
        self._second_text = ""

    def write(self, entry: Entry) -> None:
        """Log one answer: message `METHOD path status`, plus the entry's fields."""
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        # Within one loop turn the set-up is the one the first line of the turn found.
        handler = self._turn_handler if self._pending else self._direct_handler()
        if handler is None:
            message = "%s %s %s"
            logger.info(message, entry.method, entry.path, entry.status, extra=entry.fields())
            return
        formatter: JsonFormatter = handler.formatter  # type: ignore[assignment]
        e = entry
        # trace_id, span_id and request_id keep the place of the formatter's own fields.
        line = (
            f'{{"time": "{self._timestamp()}", "level": "info", '
            f'"logger": {_json(logger.name)}, '
            f'"message": {_text(f"{e.method} {e.path} {e.status}")}, '
            f'"service": {_json(formatter.service)}, "version": {_json(formatter.version)}, '
            f'"trace_id": {_json(e.trace_id)}, "span_id": {_json(e.span_id)}, '
            f'"request_id": {_text(e.request_id)}, "http_method": {_text(e.http_method)}, '
            f'"http_route": {_text(e.route)}, "http_status": {e.status!r}, '
            f'"duration_ms": {e.duration_ms!r}, "client": {_text(e.client)}}}\n'
        )
        if not self._pending:
            self._turn_handler = handler
            asyncio.get_running_loop().call_soon(self._flush, handler)
        self._pending.append(line)

    def _timestamp(self) -> str:
        """Now as the shared formatter writes it (ISO 8601, milliseconds, UTC)."""
        now = time.time()
        second = int(now)
        if second != self._second:
            text = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")
            self._second, self._second_text = second, text[:-6]  # without "+00:00"
        return f"{self._second_text}.{int((now - second) * 1000):03d}+00:00"

    def _flush(self, handler: logging.StreamHandler[TextIO]) -> None:
        lines, self._pending = self._pending, []
        handler.acquire()
        try:
            handler.stream.write("".join(lines))
            handler.flush()
        finally:
            handler.release()

    def _direct_handler(self) -> logging.StreamHandler[TextIO] | None:
        """The stdout JSON handler every record of this logger ends in, if that is all."""
        logger: logging.Logger | None = self._logger
        if self._logger.filters:
            return None
        handlers: list[logging.Handler] = []
        while logger is not None:
            handlers += logger.handlers
            if not logger.propagate:
                break
            logger = logger.parent
        if len(handlers) != 1:
            return None
        handler = handlers[0]
        if (
            type(handler) is not logging.StreamHandler
            or type(handler.formatter) is not JsonFormatter
            or handler.filters
            or handler.level > logging.INFO
        ):
            return None
        return handler
