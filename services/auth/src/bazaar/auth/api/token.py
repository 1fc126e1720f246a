"""The OAuth2 token endpoint (RFC 6749) and token revocation (RFC 7009); form-encoded."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import unquote_plus

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from bazaar.auth.api.deps import PasswordsDep, Policy, SignerDep, Uows
from bazaar.auth.api.errors import NO_STORE
from bazaar.auth.api.schemas import OAuthErrorRead, TokenRead
from bazaar.auth.domain.errors import InvalidClient, InvalidRequest, UnsupportedGrantType
from bazaar.auth.service import tokens as use
from bazaar.auth.service.tokens import IssuedTokens

router = APIRouter(prefix="/v1/auth", tags=["tokens"])

FORM = "application/x-www-form-urlencoded"


def _form_body(*fields: str) -> dict[str, Any]:
    properties = {name: {"type": "string"} for name in fields}
    schema = {"type": "object", "properties": properties}
    return {"requestBody": {"required": True, "content": {FORM: {"schema": schema}}}}


_TOKEN_FORM = _form_body(
    "grant_type", "username", "password", "refresh_token", "scope", "client_id", "client_secret"
)
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OAuthErrorRead, "description": "RFC 6749 error"},
    401: {"model": OAuthErrorRead, "description": "invalid_client"},
}


async def _parameters(request: Request) -> dict[str, str]:
    """The form parameters; each at most once (RFC 6749 §3.2)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM:
        raise InvalidRequest(f"The body must be {FORM}.")
    form = await request.form()
    params: dict[str, str] = {}
    for name in form:
        values = form.getlist(name)
        if len(values) != 1 or not isinstance(values[0], str):
            raise InvalidRequest(f"The parameter '{name}' must be sent once.")
        if "\x00" in values[0] or "\x00" in name:
            raise InvalidRequest(f"The parameter '{name}' holds a NUL character.")
        params[name] = values[0]
    return params


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise InvalidRequest(f"The parameter '{name}' is required.")
    return value


def _client_credentials(request: Request, params: dict[str, str]) -> tuple[str, str]:
    """Client id and secret from HTTP Basic or the form (not both)."""
    header = request.headers.get("authorization")
    if header is None:
        return _required(params, "client_id"), _required(params, "client_secret")
    if "client_secret" in params:
        raise InvalidRequest("Authenticate the client one way only.")
    scheme, _, encoded = header.partition(" ")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8 once decoded
        decoded = ""
    raw_id, sep, raw_secret = decoded.partition(":")
    # RFC 6749 §2.3.1: both halves are form-urlencoded before they are joined.
    client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
    if scheme.lower() != "basic" or not sep or "\x00" in client_id + secret:
        raise InvalidClient("Client authentication failed.")
    return client_id, secret


def _answer(issued: IssuedTokens) -> JSONResponse:
    body = TokenRead(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        scope=issued.scope,
        refresh_token=issued.refresh_token,
    )
    return JSONResponse(body.model_dump(exclude_none=True), headers=NO_STORE)


@router.post("/token", response_model=TokenRead, responses=_ERRORS, openapi_extra=_TOKEN_FORM)
async def token(
    request: Request, uows: Uows, passwords: PasswordsDep, signer: SignerDep, policy: Policy
) -> JSONResponse:
    """Issue tokens: password, refresh_token or client_credentials grant (RFC 6749)."""
    params = await _parameters(request)
    grant = _required(params, "grant_type")
    scope = params.get("scope")
    if grant == "password":
        client_id = params.get("client_id") or None  # empty counts as omitted (§3.2)
        if client_id is not None and client_id != policy.public_client_id:
            raise InvalidClient("Unknown client for this grant.")
        issued = await use.password_grant(
            _required(params, "username"),
            _required(params, "password"),
            scope,
            uows=uows,
            passwords=passwords,
            signer=signer,
            policy=policy,
        )
    elif grant == "refresh_token":
        issued = await use.refresh_grant(
            _required(params, "refresh_token"), scope, uows=uows, signer=signer, policy=policy
        )
    elif grant == "client_credentials":
        client_id, secret = _client_credentials(request, params)
        issued = await use.client_credentials_grant(
            client_id, secret, scope, uows=uows, signer=signer, policy=policy
        )
    else:
        raise UnsupportedGrantType(f"The grant type '{grant}' is not supported.")
    return _answer(issued)


@router.post(
    "/revoke",
    responses={200: {"description": "Revoked, or nothing to revoke"}, **_ERRORS},
    openapi_extra=_form_body("token", "token_type_hint"),
)
async def revoke(request: Request, uows: Uows) -> Response:
    """Revoke a refresh token and its family (RFC 7009); 200 whatever the token was."""
    params = await _parameters(request)
    await use.revoke(_required(params, "token"), uows=uows)
    return Response(status_code=200, headers=NO_STORE)
