"""Contract drift checks: the app's OpenAPI document must equal the committed one."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from fastapi import FastAPI

from bazaar.shared.cli import openapi_document


def openapi_drift(app: FastAPI, committed: Path) -> str | None:
    """A diff between the app's document and the committed file, or None if they agree."""
    current = openapi_document(app)
    if not committed.exists():
        return f"{committed} is missing"
    stored = committed.read_text("utf-8")
    if json.loads(stored) == json.loads(current):
        return None
    diff = difflib.unified_diff(
        stored.splitlines(), current.splitlines(), "committed", "app", lineterm="", n=2
    )
    return "\n".join(list(diff)[:80])
