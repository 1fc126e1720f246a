"""The user use cases over in-memory fakes: one transaction per change, events with it."""

from __future__ import annotations

import uuid

import pytest

from bazaar.auth.domain.errors import EmailTaken, NotAUser, UserNotFound
from bazaar.auth.domain.model import NewUser
from bazaar.auth.service import users as use

from .conftest import FakePasswords, FakeUnitsOfWork

PASSWORD = "correct horse battery"
ADA = NewUser("ada@example.com", "Ada", ("customer",))


async def test_a_registration_stores_the_user_and_its_event_in_one_unit_of_work(
    uows: FakeUnitsOfWork, passwords: FakePasswords
) -> None:
    user = await use.register_user(ADA, PASSWORD, uows=uows, passwords=passwords)

    assert uows.commits == 1
    assert uows.state.users[user.id].password_hash == f"v2${PASSWORD}"
    assert uows.state.events == [
        {
            "type": "auth.user.registered",
            "subject": str(user.id),
            "data": {"user_id": user.id, "email": "ada@example.com", "name": "Ada"},
        }
    ]


async def test_a_taken_email_in_any_case_stores_neither_user_nor_event(
    uows: FakeUnitsOfWork, passwords: FakePasswords
) -> None:
    await use.register_user(ADA, PASSWORD, uows=uows, passwords=passwords)

    with pytest.raises(EmailTaken):
        await use.register_user(
            NewUser("ADA@example.COM", "Other", ("customer",)),
            PASSWORD,
            uows=uows,
            passwords=passwords,
        )

    assert len(uows.state.users) == 1
    assert len(uows.state.events) == 1


async def test_the_admin_is_created_once_and_never_given_a_new_password(
    uows: FakeUnitsOfWork, passwords: FakePasswords
) -> None:
    created = await use.ensure_admin(
        "root@example.com", "Root", PASSWORD, uows=uows, passwords=passwords
    )
    again = await use.ensure_admin(
        "ROOT@example.com", "Root", "another password", uows=uows, passwords=passwords
    )

    assert (created, again) == (True, False)
    (admin,) = uows.state.users.values()
    assert admin.roles == ("admin",)
    assert admin.password_hash == f"v2${PASSWORD}"


async def test_roles_are_replaced_without_repeats(
    uows: FakeUnitsOfWork, passwords: FakePasswords
) -> None:
    user = await use.register_user(ADA, PASSWORD, uows=uows, passwords=passwords)

    changed = await use.set_roles(user.id, ["admin", "customer", "admin"], uows=uows)

    assert sorted(changed.roles) == ["admin", "customer"]
    assert len(changed.roles) == 2


async def test_changing_the_roles_of_nobody_is_user_not_found(uows: FakeUnitsOfWork) -> None:
    with pytest.raises(UserNotFound):
        await use.set_roles(uuid.uuid4(), ["admin"], uows=uows)


@pytest.mark.parametrize(
    ("subject", "client_id"),
    [
        ("orders", "orders"),
        (str(uuid.uuid4()), "bazaar-web"),
        # A service client whose id looks like a user id is still not a user.
        (str(uuid.uuid4()), str(uuid.uuid4())),
    ],
)
async def test_a_subject_that_is_no_stored_user_is_not_a_user(
    uows: FakeUnitsOfWork, subject: str, client_id: str
) -> None:
    with pytest.raises(NotAUser):
        await use.current_user(subject, client_id, public_client_id="bazaar-web", uows=uows)


async def test_the_current_user_is_found_by_the_token_subject(
    uows: FakeUnitsOfWork, passwords: FakePasswords
) -> None:
    user = await use.register_user(ADA, PASSWORD, uows=uows, passwords=passwords)

    found = await use.current_user(
        str(user.id), "bazaar-web", public_client_id="bazaar-web", uows=uows
    )
    assert found == user
