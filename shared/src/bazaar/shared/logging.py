"""JSON logs on stdout, one object per line, with trace, span and request ids."""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from functools import lru_cache
from typing import Any

from opentelemetry import trace

from bazaar.shared.tracecontext import current_request_id
from bazaar.shared.version import service_version

# Attributes every LogRecord has; anything else passed through `extra=` is logged as a field.
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
# Field names whose values are never written, whatever a caller passes.
_SECRET_FIELDS = re.compile(r"pass(word)?|secret|token|authorization|cookie|api[_-]?key", re.I)
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
#: One encoder, set up once (json.dumps builds one per call when given options).
_encode = json.JSONEncoder(default=str, ensure_ascii=False).encode


@lru_cache(maxsize=1024)
def _is_secret_field(key: str) -> bool:
    # Field names come from code (`extra=`), a handful per program: decided once each.
    return _SECRET_FIELDS.search(key) is not None


@lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def utc_time(created: float) -> str:
    """`created` as ISO 8601 UTC with milliseconds, as `datetime.isoformat` writes it.

    Microseconds are rounded half to even as `datetime.fromtimestamp` does, then cut to
    milliseconds; the date and time to the second are formatted once per second.
    """
    fraction, whole = math.modf(created)
    second, micros = int(whole), round(fraction * 1_000_000)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    return f"{_utc_second(second)}.{micros // 1000:03d}+00:00"


class JsonFormatter(logging.Formatter):
    """Formats records as JSON with service, version and the current trace context."""

    def __init__(self, service: str, version: str) -> None:
        super().__init__()
        self.service = service
        self.version = version

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as a JSON line."""
        entry: dict[str, Any] = {
            "time": utc_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact_text(record.getMessage()),
            "service": self.service,
            "version": self.version,
            "trace_id": None,
            "span_id": None,
            "request_id": current_request_id(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = f"{span.trace_id:032x}"
            entry["span_id"] = f"{span.span_id:016x}"
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key[:1] != "_":
                entry[key] = _redact_field(key, value)
        if record.exc_info:
            entry["exception"] = redact_text(self.formatException(record.exc_info))
        return _encode(entry)


def _redact_field(key: str, value: Any) -> Any:
    if _is_secret_field(key):
        return "[redacted]"
    return redact_text(value) if isinstance(value, str) else value


def redact_text(text: str) -> str:
    """Blank out bearer tokens that slipped into a message."""
    if _BEARER.search(text) is None:  # nearly always: no new string built
        return text
    return _BEARER.sub(r"\1[redacted]", text)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every logger's records to stdout as JSON (replaces earlier handlers).

    Each record names the service and its installed version (`service_version`).
    """
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service, service_version(service)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own access log duplicates ours; its error log goes through the root handler.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
