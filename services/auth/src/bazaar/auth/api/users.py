"""User routes: register, me, list, change roles."""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bazaar.auth.api.deps import PasswordsDep, Policy, Uows, UserAdmin
from bazaar.auth.api.schemas import RolesUpdate, UserCreate, UserRead
from bazaar.auth.domain.model import NewUser
from bazaar.auth.domain.scopes import DEFAULT_ROLES
from bazaar.auth.service import users as use
from bazaar.shared.auth import Caller
from bazaar.shared.openapi import problem_responses
from bazaar.shared.pagination import Page, Pagination

router = APIRouter(prefix="/v1/users", tags=["users"])


@router.post("", status_code=201, response_model=UserRead, responses=problem_responses(409, 422))
async def register(body: UserCreate, uows: Uows, passwords: PasswordsDep) -> JSONResponse:
    """Create an account (a customer); the email must not be in use yet."""
    new = NewUser(email=body.email, name=body.name, roles=DEFAULT_ROLES)
    user = await use.register_user(new, body.password, uows=uows, passwords=passwords)
    return JSONResponse(
        UserRead.of(user).model_dump(mode="json"),
        status_code=201,
        headers={"Location": f"/v1/users/{user.id}"},
    )


@router.get("/me", response_model=UserRead, responses=problem_responses(401, 403))
async def me(caller: Caller, uows: Uows, policy: Policy) -> UserRead:
    """Get the user the token speaks for."""
    user = await use.current_user(
        caller.subject, caller.client_id, public_client_id=policy.public_client_id, uows=uows
    )
    return UserRead.of(user)


@router.get("/{user_id}", response_model=UserRead, responses=problem_responses(401, 403, 404, 422))
async def get_user(user_id: UUID, _admin: UserAdmin, uows: Uows) -> UserRead:
    """Get one user (where a registration's Location points)."""
    return UserRead.of(await use.get_user(user_id, uows=uows))


@router.get("", response_model=Page[UserRead], responses=problem_responses(401, 403, 422))
async def list_users(
    request: Request, _admin: UserAdmin, uows: Uows, page: Pagination
) -> JSONResponse:
    """List users, newest first, cursor-paginated."""
    rows = await use.list_users(limit=page.limit + 1, after=page.after(), uows=uows)
    return page.answer(request.url, rows, UserRead.of)


@router.patch(
    "/{user_id}", response_model=UserRead, responses=problem_responses(401, 403, 404, 422)
)
async def change_roles(user_id: UUID, body: RolesUpdate, _admin: UserAdmin, uows: Uows) -> UserRead:
    """Replace a user's roles (their next token carries the new scopes)."""
    return UserRead.of(await use.set_roles(user_id, body.roles, uows=uows))
