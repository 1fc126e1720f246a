"""Dependencies of the auth routes: units of work, hashing, signing, who may call."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from bazaar.auth.adapters.passwords import Argon2Passwords
from bazaar.auth.adapters.uow import SqlUnitsOfWork
from bazaar.auth.service.ports import Signer
from bazaar.auth.service.tokens import TokenPolicy
from bazaar.shared.auth import Principal, require_scopes


async def _uows(request: Request) -> SqlUnitsOfWork:
    return SqlUnitsOfWork(request.app.state.db)


async def _passwords(request: Request) -> Argon2Passwords:
    passwords: Argon2Passwords = request.app.state.passwords
    return passwords


async def _signer(request: Request) -> Signer:
    signer: Signer = request.app.state.keyring
    return signer


async def _policy(request: Request) -> TokenPolicy:
    policy: TokenPolicy = request.app.state.token_policy
    return policy


Uows = Annotated[SqlUnitsOfWork, Depends(_uows)]
PasswordsDep = Annotated[Argon2Passwords, Depends(_passwords)]
SignerDep = Annotated[Signer, Depends(_signer)]
Policy = Annotated[TokenPolicy, Depends(_policy)]
UserAdmin = Annotated[Principal, Depends(require_scopes("users:admin"))]
