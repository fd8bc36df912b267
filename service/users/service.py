"""Invitations and set-password links: a random token goes into the link, shown once; only its
sha256 is stored. A link expires, is used once, and a newer link for the same email replaces
the older one."""
from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from service.auth import service as auth_service
from service.core import security
from service.core.db import utcnow
from service.core.errors import Conflict, NotFound
from service.models import Invitation, User
from service.users.passwords import check_password

INVITE_TTL = timedelta(days=7)
RESET_TTL = timedelta(hours=24)
LINK_PATH = "/invite/"


def _issue(db: Session, *, purpose: str, email: str, name: str = "", is_admin: bool = False,
           user: User | None = None, created_by: User | None = None) -> tuple[Invitation, str]:
    now = utcnow()
    # one live link per email: a new one replaces what was sent before
    db.execute(update(Invitation).where(Invitation.email == email, Invitation.used_at.is_(None),
                                        Invitation.revoked_at.is_(None)).values(revoked_at=now))
    token = secrets.token_urlsafe(32)
    invitation = Invitation(purpose=purpose, email=email, name=name, is_admin=is_admin,
                            token_hash=security.sha256_hex(token), user_id=user.id if user else None,
                            created_by_id=created_by.id if created_by else None, created_at=now,
                            expires_at=now + (INVITE_TTL if purpose == "invite" else RESET_TTL))
    db.add(invitation)
    db.flush()
    return invitation, token


def create_invitation(db: Session, *, email: str, name: str = "", is_admin: bool = False,
                      created_by: User | None = None) -> tuple[Invitation, str]:
    """Invite a new user; returns the invitation and the token for its link (shown once)."""
    email = auth_service.normalize_email(email)
    if auth_service.get_user_by_email(db, email) is not None:
        raise Conflict(f"a user with email {email} already exists; send them a set-password link instead",
                       code="user_exists")
    return _issue(db, purpose="invite", email=email, name=name.strip(), is_admin=is_admin,
                  created_by=created_by)


def create_password_link(db: Session, *, user_id: int, created_by: User | None = None
                         ) -> tuple[Invitation, str]:
    """A one-time link with which an existing user sets a new password."""
    user = auth_service.get_user(db, user_id)
    return _issue(db, purpose="reset", email=user.email, name=user.name, user=user,
                  created_by=created_by)


def link_for(base_url: str, token: str) -> str:
    return base_url.rstrip("/") + LINK_PATH + token


def get_open_invitation(db: Session, token: str) -> Invitation:
    """The invitation behind a link, if it can still be used; 404 with the reason otherwise."""
    invitation = db.scalar(select(Invitation).where(Invitation.token_hash == security.sha256_hex(token)))
    if invitation is None:
        raise NotFound("this link is not valid; ask an admin for a new one", code="invitation_not_found")
    if invitation.used_at is not None:
        raise NotFound("this link was already used; log in, or ask an admin for a new one",
                       code="invitation_used")
    if invitation.revoked_at is not None:
        raise NotFound("this link was replaced or withdrawn; ask an admin for a new one",
                       code="invitation_revoked")
    if invitation.expires_at <= utcnow():
        raise NotFound("this link has expired; ask an admin for a new one", code="invitation_expired")
    return invitation


def use_invitation(db: Session, *, token: str, password: str) -> User:
    """Set the password: creates the invited account, or changes an existing user's password."""
    invitation = get_open_invitation(db, token)
    check_password(password, email=invitation.email)
    # claim the link once, even when two requests race
    claimed = db.execute(update(Invitation).where(Invitation.id == invitation.id,
                                                  Invitation.used_at.is_(None))
                         .values(used_at=utcnow())).rowcount
    if claimed != 1:
        raise NotFound("this link was already used", code="invitation_used")
    if invitation.purpose == "reset":
        user = auth_service.get_user(db, invitation.user_id or 0)
        user.password_hash = security.hash_password(password)
        auth_service.revoke_sessions(db, user_id=user.id)  # a reset logs out every browser
        db.flush()
        return user
    return auth_service.create_user(db, email=invitation.email, password=password,
                                    name=invitation.name, is_admin=invitation.is_admin)


def open_invitations_query() -> Select[tuple[Invitation]]:
    """Invitations and set-password links that can still be used."""
    return select(Invitation).where(Invitation.used_at.is_(None), Invitation.revoked_at.is_(None),
                                    Invitation.expires_at > utcnow())


def list_open_invitations(db: Session) -> list[Invitation]:
    return list(db.scalars(open_invitations_query().order_by(Invitation.id.desc()).limit(200)))


def revoke_invitation(db: Session, *, invitation_id: int) -> Invitation:
    invitation = db.get(Invitation, invitation_id)
    if invitation is None:
        raise NotFound("invitation not found", code="invitation_not_found")
    if invitation.used_at is None and invitation.revoked_at is None:
        invitation.revoked_at = utcnow()
        db.flush()
    return invitation


def list_users(db: Session, *, limit: int = 500) -> list[User]:
    return list(db.scalars(select(User).order_by(User.email).limit(limit)))
