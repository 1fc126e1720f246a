"""The NUL sweep probes every string a request may carry, in every branch of the schema."""

from __future__ import annotations

from typing import Any

from bazaar.shared.testing.nulsweep import nul_probes

RAW_NUL = "\x00"


def holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return RAW_NUL in value
    if isinstance(value, dict):
        return any(holds_nul(v) for v in value.values())
    if isinstance(value, list):
        return any(holds_nul(v) for v in value)
    return False


DOCUMENT: dict[str, Any] = {
    "paths": {
        "/v1/payments": {
            "post": {
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Payment"}}
                    }
                }
            }
        }
    },
    "components": {
        "schemas": {
            "Payment": {
                "type": "object",
                "properties": {
                    "method": {
                        "anyOf": [
                            {"$ref": "#/components/schemas/Card"},
                            {"$ref": "#/components/schemas/Transfer"},
                            {"type": "null"},
                        ]
                    },
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "Card": {"type": "object", "properties": {"number": {"type": "string"}}},
            "Transfer": {"type": "object", "properties": {"iban": {"type": "string"}}},
        }
    },
}


def test_every_anyof_branch_and_additional_properties_get_a_probe_holding_a_nul() -> None:
    probes = nul_probes(DOCUMENT)

    targets = {probe.target for probe in probes}
    assert ("body", "method", "number") in targets  # the first branch
    assert ("body", "method", "iban") in targets  # the second: was never probed
    assert any(t[:2] == ("body", "labels") and len(t) == 3 for t in targets)  # a map's values
    for probe in probes:
        assert holds_nul(probe.json), probe.describe()
