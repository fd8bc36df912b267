"""Invitations and set-password links: hashed, one-time, expiring; the password policy."""
from __future__ import annotations

from datetime import timedelta

import pytest

from service.core.errors import Conflict, Invalid, NotFound
from service.models import Invitation
from service.users import service as users_service
from service.users.passwords import password_problem

GOOD = "a long enough passphrase"


def test_policy_refuses_short_common_and_own_email():
    assert password_problem("x") and password_problem("aaaaaaaaaaaa")
    assert password_problem("Password123") == "is too common"
    assert password_problem("ada.lovelace", email="ada.lovelace@example.com")
    assert password_problem(GOOD, email="ada@example.com") is None


def test_invitation_link_is_hashed_used_once_and_creates_the_user(db, factories):
    admin = factories.make_user(db, is_admin=True)
    invitation, token = users_service.create_invitation(db, email=" New@Example.com ", name="New",
                                                        created_by=admin)
    assert invitation.email == "new@example.com" and token not in invitation.token_hash
    with pytest.raises(Invalid):
        users_service.use_invitation(db, token=token, password="short")
    user = users_service.use_invitation(db, token=token, password=GOOD)
    assert (user.email, user.name, user.is_admin) == ("new@example.com", "New", False)
    with pytest.raises(NotFound, match="already used"):
        users_service.use_invitation(db, token=token, password=GOOD)
    with pytest.raises(Conflict):  # the account exists now
        users_service.create_invitation(db, email="new@example.com")


def test_expired_replaced_and_withdrawn_links_do_not_work(db, factories):
    _old, old = users_service.create_invitation(db, email="x@example.com")
    inv, new = users_service.create_invitation(db, email="x@example.com")
    with pytest.raises(NotFound, match="replaced"):
        users_service.get_open_invitation(db, old)
    inv.expires_at = inv.expires_at - timedelta(days=30)
    db.flush()
    with pytest.raises(NotFound, match="expired"):
        users_service.get_open_invitation(db, new)
    inv3, third = users_service.create_invitation(db, email="x@example.com")
    users_service.revoke_invitation(db, invitation_id=inv3.id)
    with pytest.raises(NotFound):
        users_service.get_open_invitation(db, third)
    assert users_service.list_open_invitations(db) == []


def test_password_link_sets_a_new_password(db, factories):
    from service.core import security

    user = factories.make_user(db)
    inv, token = users_service.create_password_link(db, user_id=user.id)
    assert inv.purpose == "reset" and inv.user_id == user.id
    users_service.use_invitation(db, token=token, password=GOOD)
    db.refresh(user)
    assert security.verify_password(user.password_hash, GOOD)
    assert db.get(Invitation, inv.id).used_at is not None
