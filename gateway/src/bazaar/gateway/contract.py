"""The gateway's committed contract: the merge of the services' committed OpenAPI documents.

python -m bazaar.gateway.contract contracts/openapi   # rewrites gateway.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bazaar.gateway.docs import merge_openapi

#: The services whose public routes the gateway serves, as committed under contracts/openapi.
SERVICES = ("auth", "catalog", "orders")


def gateway_document(contracts: Path, version: str = "0.1.0") -> dict[str, Any]:
    """Merge the committed service documents found in `contracts` (absent ones are skipped)."""
    documents = {
        name: json.loads((contracts / f"{name}.json").read_text("utf-8"))
        for name in SERVICES
        if (contracts / f"{name}.json").exists()
    }
    return merge_openapi(documents, title="Bazaar API", version=version)


def render(document: dict[str, Any]) -> str:
    """Stable, committed-friendly JSON."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    """Write contracts/openapi/gateway.json from the services' committed documents."""
    contracts = Path(sys.argv[1] if len(sys.argv) > 1 else "contracts/openapi")
    (contracts / "gateway.json").write_text(render(gateway_document(contracts)), "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
