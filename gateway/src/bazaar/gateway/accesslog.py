"""One JSON access-log line per answer, rendered directly when logging is set up as usual.

Through `logging`, a line costs a LogRecord, the shared JsonFormatter (OpenTelemetry context
lookups, a regex per field, json.dumps) and a flush: tens of µs, the most expensive step of
a proxied request. When the `bazaar.access` records would end in the one stdout handler that
`configure_logging` installs, the gateway writes the very line that handler would write
(same fields, same order, same redaction), and writes the lines of one event-loop turn
together. Under any other logging set-up (tests' caplog, extra handlers, filters) the
record goes through `logging` as usual.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, TextIO

from bazaar.shared.logging import JsonFormatter, redact_text

_json: Any = encode_basestring  # the C escaper json.dumps(..., ensure_ascii=False) uses
_CONTEXT = ("trace_id", "span_id", "request_id")
_MAY_HOLD_TOKEN = re.compile(r"(?i)bearer\s")


def _text(text: str) -> str:
    """A string's JSON, redacted as the shared formatter redacts it."""
    if _MAY_HOLD_TOKEN.search(text):  # redact_text changes nothing without this
        text = redact_text(text)
    return str(_json(text))


def _value(value: object) -> str:
    """A field's JSON, as the shared formatter writes it (strings redacted)."""
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float):
        return repr(value)
    return str(_json(str(value)))


class AccessLog:
    """Writes the access log of the gateway (`bazaar.access`)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._pending: list[str] = []
        self._turn_handler: logging.StreamHandler[TextIO] | None = None

    def write(
        self,
        *,
        method: str,
        path: str,
        status: int,
        fields: dict[str, Any],
    ) -> None:
        """Log one answer: message `METHOD path status`, plus `fields`."""
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        # Within one loop turn the set-up is the one the first line of the turn found.
        handler = self._turn_handler if self._pending else self._direct_handler()
        if handler is None:
            logger.info("%s %s %s", method, path, status, extra=fields)
            return
        formatter: JsonFormatter = handler.formatter  # type: ignore[assignment]
        stamp = datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="milliseconds")
        parts = [
            f'{{"time": "{stamp}", "level": "info", "logger": {_json(logger.name)}, '
            f'"message": {_text(f"{method} {path} {status}")}, '
            f'"service": {_json(formatter.service)}, "version": {_json(formatter.version)}'
        ]
        # The formatter's own trace_id, span_id and request_id come first; fields override them.
        for key in _CONTEXT:
            parts.append(f', "{key}": {_value(fields.get(key))}')
        for key, value in fields.items():
            if key not in _CONTEXT:
                parts.append(f", {_json(key)}: {_value(value)}")
        parts.append("}\n")
        if not self._pending:
            self._turn_handler = handler
            asyncio.get_running_loop().call_soon(self._flush, handler)
        self._pending.append("".join(parts))

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
