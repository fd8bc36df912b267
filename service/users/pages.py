"""Browser pages: the admins' users page (invite, set-password links) and the page a link opens."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from service.core.deps import AdminUser, Public, SessionDep
from service.core.errors import AppError
from service.core.templating import render
from service.users import service as users_service
from service.users.passwords import MIN_LENGTH

router = APIRouter(include_in_schema=False)


def _users_page(request: Request, db, *, link: tuple[str, str] | None = None, error: str | None = None,
                message: str | None = None, status_code: int = 200) -> HTMLResponse:
    return render(request, "pages/users.html", status_code=status_code,
                  users=users_service.list_users(db), invitations=users_service.list_open_invitations(db),
                  link=link, error=error, message=message)


@router.get("/admin/users", response_class=HTMLResponse)
def users_page(request: Request, _: AdminUser, db: SessionDep):
    return _users_page(request, db)


def _show_new_link(request: Request, db, issue, label: str) -> HTMLResponse:
    """Run ``issue()`` (-> invitation, token) and show its link this once."""
    try:
        with db.begin_nested():
            invitation, token = issue()
    except AppError as exc:
        return _users_page(request, db, error=exc.message, status_code=exc.status_code)
    link = users_service.link_for(str(request.base_url), token)
    return _users_page(request, db, link=(f"{label} for {invitation.email}", link))


@router.post("/admin/users/invite", response_class=HTMLResponse)
def invite_form(request: Request, admin: AdminUser, db: SessionDep, email: Annotated[str, Form()],
                name: Annotated[str, Form()] = "", is_admin: Annotated[bool, Form()] = False):
    return _show_new_link(request, db, lambda: users_service.create_invitation(
        db, email=email, name=name, is_admin=is_admin, created_by=admin), "Invitation link")


@router.post("/admin/users/{user_id}/password-link", response_class=HTMLResponse)
def password_link_form(request: Request, user_id: int, admin: AdminUser, db: SessionDep):
    return _show_new_link(request, db, lambda: users_service.create_password_link(
        db, user_id=user_id, created_by=admin), "Set-password link")


@router.post("/admin/invitations/{invitation_id}/revoke", response_class=HTMLResponse)
def revoke_form(request: Request, invitation_id: int, _: AdminUser, db: SessionDep):
    try:
        with db.begin_nested():
            invitation = users_service.revoke_invitation(db, invitation_id=invitation_id)
    except AppError as exc:
        return _users_page(request, db, error=exc.message, status_code=exc.status_code)
    return _users_page(request, db, message=f"Withdrew the link for {invitation.email}.")


def _invite_page(request: Request, invitation, *, error: str | None = None,
                 status_code: int = 200) -> HTMLResponse:
    return render(request, "pages/invite.html", status_code=status_code, invitation=invitation,
                  min_length=MIN_LENGTH, error=error)


@router.get("/invite/{token}", response_class=HTMLResponse)
def invite_page(request: Request, token: str, _: Public, db: SessionDep):
    return _invite_page(request, users_service.get_open_invitation(db, token))


@router.post("/invite/{token}", response_class=HTMLResponse)
def set_password_form(request: Request, token: str, _: Public, db: SessionDep,
                      password: Annotated[str, Form()], password_again: Annotated[str, Form()]):
    invitation = users_service.get_open_invitation(db, token)
    if password != password_again:
        return _invite_page(request, invitation, error="The two passwords differ.", status_code=422)
    try:
        with db.begin_nested():
            user = users_service.use_invitation(db, token=token, password=password)
    except AppError as exc:
        return _invite_page(request, invitation, error=exc.message, status_code=exc.status_code)
    return render(request, "pages/invite.html", invitation=invitation, done=user.email)
