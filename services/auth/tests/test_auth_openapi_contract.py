"""The committed OpenAPI document is the auth service's public contract: it must not drift."""

from __future__ import annotations

from pathlib import Path

from bazaar.auth.app import create_app
from bazaar.auth.config import AuthSettings
from bazaar.shared.testing.contracts import openapi_drift

CONTRACT = Path(__file__).resolve().parents[3] / "contracts" / "openapi" / "auth.json"


def test_the_app_document_equals_the_committed_contract() -> None:
    app = create_app(AuthSettings(_env_file=None, version="0.1.0"))  # type: ignore[call-arg]
    drift = openapi_drift(app, CONTRACT)
    assert drift is None, f"OpenAPI drift; run `make contracts` and review:\n{drift}"
