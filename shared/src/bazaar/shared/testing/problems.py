"""Checking answers as clients see them: the RFC 9457 shape every service's errors share."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from bazaar.shared.problem import PROBLEM_CONTENT_TYPE

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def check_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """Assert an RFC 9457 problem with this status and slug (and a trace id); return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = response.json()
    assert body["type"].endswith("/" + slug), body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["trace_id"], str) and _TRACE_ID.match(body["trace_id"]), body
    if slug == "validation-error":
        assert body["errors"], body
        for error in body["errors"]:
            assert set(error) >= {"loc", "msg", "type"}, error
            assert isinstance(error["loc"], list)
    return body


@pytest.fixture
def expect_problem() -> Callable[[httpx.Response, int, str], dict[str, Any]]:
    """The problem check as a fixture (see check_problem)."""
    return check_problem
