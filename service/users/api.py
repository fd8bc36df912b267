"""REST for admins: invitations and set-password links (the link is in the response, once);
and the public endpoint a link's holder uses to set the password."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from service.auth.schemas import UserRead
from service.core.deps import AdminUser, Public, SessionDep
from service.core.pagination import CursorQ, LimitQ, Page, page
from service.models import Invitation, User
from service.users import schemas
from service.users import service as users_service

router = APIRouter(prefix="/api/v1", tags=["users"])


def _created(request: Request, invitation: Invitation, token: str) -> dict:
    data = schemas.InvitationRead.model_validate(invitation).model_dump()
    return {**data, "link": users_service.link_for(str(request.base_url), token)}


@router.get("/invitations", response_model=Page[schemas.InvitationRead])
def list_invitations(_: AdminUser, db: SessionDep, limit: LimitQ = 50, cursor: CursorQ = None):
    """Invitations and set-password links that can still be used, newest first."""
    return page(db, users_service.open_invitations_query(), Invitation.id, limit=limit,
                cursor=cursor, descending=True)


@router.post("/invitations", response_model=schemas.InvitationCreated,
             status_code=status.HTTP_201_CREATED, responses={409: {"description": "user exists"}})
def create_invitation(body: schemas.InvitationCreate, request: Request, admin: AdminUser,
                      db: SessionDep) -> dict:
    """Invite a new user: the response carries the one-time link (not stored, shown once)."""
    invitation, token = users_service.create_invitation(db, email=body.email, name=body.name,
                                                        is_admin=body.is_admin, created_by=admin)
    return _created(request, invitation, token)


@router.post("/users/{user_id}/password-link", response_model=schemas.InvitationCreated,
             status_code=status.HTTP_201_CREATED, responses={404: {"description": "no such user"}})
def create_password_link(user_id: int, request: Request, admin: AdminUser, db: SessionDep) -> dict:
    """A one-time link with which an existing user sets a new password."""
    invitation, token = users_service.create_password_link(db, user_id=user_id, created_by=admin)
    return _created(request, invitation, token)


@router.delete("/invitations/{invitation_id}", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response, responses={404: {"description": "no such invitation"}})
def revoke_invitation(invitation_id: int, _: AdminUser, db: SessionDep) -> Response:
    """Withdraw a link before it is used."""
    users_service.revoke_invitation(db, invitation_id=invitation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/invitations/{token}/accept", response_model=UserRead,
             responses={404: {"description": "link unknown, used, withdrawn or expired"},
                        422: {"description": "password refused by the policy"}})
def accept_invitation(token: str, body: schemas.PasswordSet, _: Public, db: SessionDep) -> User:
    """Set the password with a link's token: creates the invited account or resets a password."""
    return users_service.use_invitation(db, token=token, password=body.password)
