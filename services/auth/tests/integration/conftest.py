"""Auth integration fixtures: the real database behind a started app, logins, answer checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest


@pytest.fixture
def expect_invalid_grant() -> Callable[[httpx.Response], dict[str, Any]]:
    """Check a response is the RFC 6749 invalid_grant answer; return its body."""

    def check(response: httpx.Response) -> dict[str, Any]:
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "no-store"
        body: dict[str, Any] = response.json()
        assert body["error"] == "invalid_grant", body
        return body

    return check
