"""The committed gateway contract is the merge of the committed service contracts."""

from __future__ import annotations

from pathlib import Path

from bazaar.gateway.contract import gateway_document, render

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts" / "openapi"


def test_the_committed_gateway_contract_is_the_merge_of_the_service_contracts() -> None:
    committed = (CONTRACTS / "gateway.json").read_text("utf-8")
    assert committed == render(gateway_document(CONTRACTS)), "run `make contracts` and review"


def test_the_gateway_contract_has_the_public_routes_and_no_internal_one() -> None:
    paths = gateway_document(CONTRACTS)["paths"]
    assert {"/v1/products", "/v1/auth/token", "/v1/users/me"} <= set(paths)
    assert not any(path.startswith("/v1/reservations") for path in paths)
