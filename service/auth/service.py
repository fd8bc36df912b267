"""Users, passwords, browser sessions, API tokens and login rate limiting."""
from __future__ import annotations

from datetime import timedelta

from fastapi import Request
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from service.core import security
from service.core.config import get_settings
from service.core.db import utcnow
from service.core.errors import Conflict, Forbidden, NotFound, RateLimited
from service.models import ApiToken, LoginAttempt, User, WebSession


def normalize_email(email: str) -> str:
    return email.strip().lower()


def create_user(db: Session, *, email: str, password: str, name: str = "",
                is_admin: bool = False) -> User:
    email = normalize_email(email)
    if db.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"a user with email {email} already exists", code="user_exists")
    user = User(email=email, name=name or email.split("@")[0],
                password_hash=security.hash_password(password), is_admin=is_admin)
    db.add(user)
    db.flush()
    return user


def get_user_by_email(db: Session, email: str) -> User | None:
    return db.scalar(select(User).where(User.email == normalize_email(email)))


def get_user(db: Session, user_id: int) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise NotFound("user not found", code="user_not_found")
    return user


# -- login and sessions ------------------------------------------------------------------------

def _attempt_key(email: str, ip: str) -> str:
    return f"{normalize_email(email)}|{ip}"


def check_rate_limit(db: Session, *, email: str, ip: str) -> None:
    settings = get_settings()
    since = utcnow() - timedelta(seconds=settings.login_rate_window_seconds)
    failures = db.scalar(
        select(func.count()).select_from(LoginAttempt).where(
            LoginAttempt.key == _attempt_key(email, ip), LoginAttempt.at >= since,
            LoginAttempt.success.is_(False),
        )
    )
    if failures >= settings.login_rate_limit:
        raise RateLimited("too many failed login attempts; try again later",
                          extra={"retry_after": settings.login_rate_window_seconds})


def authenticate(db: Session, *, email: str, password: str, ip: str) -> User | None:
    """Check credentials; record the attempt. Rate limited per email and client address."""
    check_rate_limit(db, email=email, ip=ip)
    user = get_user_by_email(db, email)
    ok = security.verify_password(user.password_hash if user else security.DUMMY_HASH, password)
    ok = ok and user is not None and user.is_active
    db.add(LoginAttempt(key=_attempt_key(email, ip), success=ok))
    db.flush()
    return user if ok else None


def start_session(db: Session, user: User) -> tuple[str, WebSession]:
    sid = security.new_session_id()
    ws = WebSession(id_hash=security.sha256_hex(sid), user_id=user.id,
                    csrf_token=security.new_csrf_token(),
                    expires_at=utcnow() + timedelta(seconds=get_settings().session_max_age_seconds))
    db.add(ws)
    db.flush()
    return sid, ws


def end_session(db: Session, sid: str) -> None:
    db.execute(delete(WebSession).where(WebSession.id_hash == security.sha256_hex(sid)))


def session_from_cookie(db: Session, sid: str | None) -> WebSession | None:
    if not sid:
        return None
    ws = db.get(WebSession, security.sha256_hex(sid))
    if ws is None or ws.expires_at < utcnow():
        return None
    return ws


# -- API tokens --------------------------------------------------------------------------------

def create_token(db: Session, *, user: User, name: str, scopes: list[str] | None = None
                 ) -> tuple[ApiToken, str]:
    secret, prefix, digest = security.new_api_token()
    token = ApiToken(user_id=user.id, name=name, prefix=prefix, token_hash=digest,
                     scopes=scopes or ["api"])
    db.add(token)
    db.flush()
    return token, secret


def list_tokens(db: Session, *, user: User) -> list[ApiToken]:
    return list(db.scalars(select(ApiToken).where(ApiToken.user_id == user.id)
                           .order_by(ApiToken.id)))


def revoke_token(db: Session, *, user: User, token_id: int) -> ApiToken:
    token = db.get(ApiToken, token_id)
    if token is None or (token.user_id != user.id and not user.is_admin):
        raise NotFound("token not found", code="token_not_found")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    db.flush()
    return token


def user_from_token(db: Session, secret: str) -> User | None:
    if security.token_prefix(secret) is None:
        return None
    token = db.scalar(select(ApiToken).where(ApiToken.token_hash == security.sha256_hex(secret)))
    if token is None or token.revoked_at is not None:
        return None
    user = db.get(User, token.user_id)
    if user is None or not user.is_active:
        return None
    now = utcnow()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        token.last_used_at = now
    return user


def user_from_request(db: Session, request: Request) -> User | None:
    """Bearer token first; else the session cookie, which needs a CSRF token on unsafe methods."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret:
            return None
        return user_from_token(db, secret.strip())
    ws = session_from_cookie(db, request.cookies.get(get_settings().session_cookie_name))
    if ws is None:
        return None
    request.state.web_session = ws
    request.state.csrf_token = ws.csrf_token
    if request.method in {"POST", "PUT", "PATCH", "DELETE"}:
        sent = getattr(request.state, "csrf_candidate", None)
        if not sent or not security.constant_time_equals(sent, ws.csrf_token):
            raise Forbidden("missing or invalid CSRF token", code="csrf_failed")
    user = db.get(User, ws.user_id)
    return user if user and user.is_active else None
