"""JSON logs on stdout, one object per line, with trace, span and request ids."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from bazaar.shared.tracecontext import current_request_id, current_span_id, current_trace_id

# Attributes every LogRecord has; anything else passed through `extra=` is logged as a field.
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
# Field names whose values are never written, whatever a caller passes.
_SECRET_FIELDS = re.compile(r"pass(word)?|secret|token|authorization|cookie|api[_-]?key", re.I)
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")


class JsonFormatter(logging.Formatter):
    """Formats records as JSON with service, version and the current trace context."""

    def __init__(self, service: str, version: str) -> None:
        super().__init__()
        self.service = service
        self.version = version

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as a JSON line."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact_text(record.getMessage()),
            "service": self.service,
            "version": self.version,
            "trace_id": current_trace_id(),
            "span_id": current_span_id(),
            "request_id": current_request_id(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = _redact_field(key, value)
        if record.exc_info:
            entry["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def _redact_field(key: str, value: Any) -> Any:
    if _SECRET_FIELDS.search(key):
        return "[redacted]"
    return redact_text(value) if isinstance(value, str) else value


def redact_text(text: str) -> str:
    """Blank out bearer tokens that slipped into a message."""
    return _BEARER.sub(r"\1[redacted]", text)


def configure_logging(service: str, version: str, level: str = "INFO") -> None:
    """Send every logger's records to stdout as JSON (replaces earlier handlers)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service, version))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own access log duplicates ours; its error log goes through the root handler.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
