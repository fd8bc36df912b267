from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import urlparse

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from service.auth import audit
from service.auth import service as auth_service
from service.core import security
from service.core.config import get_settings
from service.core.deps import Public, SessionDep
from service.core.errors import RateLimited
from service.core.templating import render
from service.models import User

router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "annotune_login_csrf"


def _safe_next(value: str | None) -> str:
    if not value:
        return "/projects"
    parsed = urlparse(value)
    if parsed.scheme or parsed.netloc or not value.startswith("/") or value.startswith("//"):
        return "/projects"
    return value


def _login_page(request: Request, *, next_url: str, email: str = "", error: str | None = None,
                status_code: int = 200) -> HTMLResponse:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, "pages/login.html", status_code=status_code, login_csrf=token,
                      next=next_url, email=email, error=error, who=None)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="lax",
                        secure=get_settings().session_cookie_secure, path="/login")
    return response


@router.get("/", response_class=HTMLResponse)
def index(_: Public) -> RedirectResponse:
    return RedirectResponse("/projects", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, _: Public, next: str | None = None) -> HTMLResponse:
    return _login_page(request, next_url=_safe_next(next))


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, db: SessionDep, _: Public,
          email: Annotated[str, Form()], password: Annotated[str, Form()],
          csrf_token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/projects"):
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not csrf_token or not security.constant_time_equals(cookie, csrf_token):
        return _login_page(request, next_url=_safe_next(next), email=email,
                           error="Your form expired; please try again.", status_code=403)
    ip = request.client.host if request.client else "-"
    try:
        user = auth_service.authenticate(db, email=email, password=password, ip=ip)
    except RateLimited as exc:
        db.commit()  # keep the audit event
        page = _login_page(request, next_url=_safe_next(next), email=email, error=exc.message,
                           status_code=429)
        page.headers["Retry-After"] = str(exc.extra.get("retry_after", 60))
        return page
    if user is None:
        db.commit()  # keep the audit event
        return _login_page(request, next_url=_safe_next(next), email=email,
                           error="Wrong email or password.", status_code=401)
    settings = get_settings()
    # a fresh session id on every login; the one the browser brought (if any) is deleted
    sid, _ws = auth_service.start_session(
        db, user, previous_sid=request.cookies.get(settings.session_cookie_name))
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(settings.session_cookie_name, sid, httponly=True, samesite="lax",
                        secure=settings.session_cookie_secure,
                        max_age=settings.session_max_age_seconds, path="/")
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, db: SessionDep, _: Public,
           csrf_token: Annotated[str, Form()] = "") -> RedirectResponse:
    """Ends the server session whatever the form says: a missing or stale CSRF token must not
    leave a session alive that the user believes is gone (a forged logout is harmless)."""
    settings = get_settings()
    sid = request.cookies.get(settings.session_cookie_name)
    ws = auth_service.session_from_cookie(db, sid)
    if sid:
        auth_service.end_session(db, sid)
    if ws is not None:
        audit.record(db, "logout", actor=db.get(User, ws.user_id),
                     details={"csrf_ok": bool(csrf_token) and security.constant_time_equals(
                         csrf_token, ws.csrf_token)})
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(settings.session_cookie_name, path="/")
    return response
