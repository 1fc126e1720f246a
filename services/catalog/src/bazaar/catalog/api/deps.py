"""Dependencies of the catalog routes: who may call, and with what."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from bazaar.shared.auth import Principal, require_scopes

Writer = Annotated[Principal, Depends(require_scopes("catalog:write"))]
Reserver = Annotated[Principal, Depends(require_scopes("catalog:reserve"))]
