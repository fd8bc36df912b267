"""Users, passwords, browser sessions, API tokens (scoped, optionally expiring) and login
rate limiting."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import Request
from sqlalchemy import Select, delete, select, update
from sqlalchemy.orm import Session

from service.auth import audit, ratelimit
from service.core import deps, security
from service.core.config import get_settings
from service.core.db import utcnow
from service.core.errors import Conflict, Forbidden, Invalid, NotFound, RateLimited
from service.models import ApiToken, User, WebSession


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

def _limits(email: str, ip: str) -> list[ratelimit.Limit]:
    settings = get_settings()
    email = normalize_email(email)
    return [ratelimit.Limit(f"login:email+ip:{email}|{ip}", settings.login_rate_limit),
            ratelimit.Limit(f"login:ip:{ip}", settings.login_rate_limit_per_address),
            ratelimit.Limit(f"login:email:{email}", settings.login_rate_limit_per_email)]


def authenticate(db: Session, *, email: str, password: str, ip: str) -> User | None:
    """Check credentials, rate limited per email+address, per address (across emails) and per
    email (across addresses). The attempt is counted atomically *before* the password is
    checked, so concurrent attempts cannot all slip under the limit; a success gives it back.
    Records ``login.*`` audit events in ``db`` (the caller commits them, also on failure)."""
    limits = _limits(email, ip)
    exceeded = ratelimit.hit(db, limits, window=get_settings().login_rate_window_seconds)
    if exceeded is not None:
        audit.record(db, "login.limited", actor_email=normalize_email(email), ip=ip,
                     details={"limit": exceeded.key.split(":")[1], "retry_after": exceeded.retry_after})
        raise RateLimited(
            f"too many failed login attempts; try again in {ratelimit.describe_wait(exceeded.retry_after)}",
            extra={"retry_after": exceeded.retry_after})
    user = get_user_by_email(db, email)
    ok = security.verify_password(user.password_hash if user else security.dummy_hash(), password)
    ok = ok and user is not None and user.is_active
    if ok:
        ratelimit.give_back(db, [lim.key for lim in limits[1:]], reset=[limits[0].key])
        audit.record(db, "login.success", actor=user, ip=ip)
        return user
    audit.record(db, "login.failure", actor_email=normalize_email(email), ip=ip,
                 details={"known_user": user is not None})
    return None


def start_session(db: Session, user: User, *, previous_sid: str | None = None
                  ) -> tuple[str, WebSession]:
    """A new session with a fresh id; the session the browser had before (if any) is deleted,
    so an id planted before login is never the logged-in one."""
    if previous_sid:
        end_session(db, previous_sid)
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


def revoke_sessions(db: Session, *, user_id: int, keep_sid: str | None = None) -> int:
    """Delete the user's browser sessions (all, or all but ``keep_sid``); returns how many."""
    stmt = delete(WebSession).where(WebSession.user_id == user_id)
    if keep_sid:
        stmt = stmt.where(WebSession.id_hash != security.sha256_hex(keep_sid))
    return db.execute(stmt).rowcount or 0


def revoke_tokens(db: Session, *, user_id: int) -> int:
    """Revoke every live API token of the user; returns how many."""
    return db.execute(update(ApiToken).where(ApiToken.user_id == user_id,
                                             ApiToken.revoked_at.is_(None))
                      .values(revoked_at=utcnow())).rowcount or 0


def change_password(db: Session, *, user: User, current_password: str, new_password: str,
                    keep_sid: str | None = None, revoke_api_tokens: bool = False) -> dict[str, int]:
    """The user's own change: needs the current password; ends every other session."""
    if not security.verify_password(user.password_hash, current_password):
        raise Forbidden("the current password is wrong", code="wrong_password")
    user.password_hash = security.hash_password(new_password)
    revoked = {"sessions": revoke_sessions(db, user_id=user.id, keep_sid=keep_sid),
               "tokens": revoke_tokens(db, user_id=user.id) if revoke_api_tokens else 0}
    db.flush()
    audit.record(db, "password.change", actor=user, target=f"user:{user.id}", details=revoked)
    return revoked


def update_user(db: Session, *, actor: User, user: User, changes: dict[str, Any],
                revoke_api_tokens: bool = True) -> User:
    """An admin's change to a user. A password reset, deactivation or removal of the admin role
    ends the user's sessions and (unless ``revoke_api_tokens`` is false) revokes their tokens."""
    changes = {k: v for k, v in changes.items() if v is not None}
    reset = "password" in changes
    if reset:
        user.password_hash = security.hash_password(changes.pop("password"))
    lost_admin = user.is_admin and changes.get("is_admin") is False
    deactivated = user.is_active and changes.get("is_active") is False
    for key, value in changes.items():
        setattr(user, key, value)
    revoked = {"sessions": 0, "tokens": 0}
    if reset or lost_admin or deactivated:
        revoked["sessions"] = revoke_sessions(db, user_id=user.id)
        if revoke_api_tokens:
            revoked["tokens"] = revoke_tokens(db, user_id=user.id)
    db.flush()
    audit.record(db, "password.reset" if reset else "user.update", actor=actor,
                 target=f"user:{user.id}",
                 details={"changed": sorted(changes) + (["password"] if reset else []), **revoked})
    return user


# -- API tokens --------------------------------------------------------------------------------

SCOPES = ("read", "write", "admin")
LEGACY_FULL_SCOPE = "api"  # tokens made before scopes were enforced: full access


def effective_scopes(scopes: list[str] | None) -> frozenset[str]:
    """What a token's stored scopes allow: ``write`` and ``admin`` imply ``read``."""
    granted = set(scopes or [])
    if LEGACY_FULL_SCOPE in granted:
        granted |= set(SCOPES)
    if granted & {"write", "admin"}:
        granted.add("read")
    return frozenset(granted & set(SCOPES))


def default_scopes(user: User) -> list[str]:
    return ["read", "write", "admin"] if user.is_admin else ["read", "write"]


def create_token(db: Session, *, user: User, name: str, scopes: list[str] | None = None,
                 expires_in_days: int | None = None,
                 caller_scopes: frozenset[str] | None = None) -> tuple[ApiToken, str]:
    """A new token. It never gets a scope its creator lacks (``caller_scopes``: the scopes of
    the token making the request; ``None`` for a browser session, which has them all)."""
    wanted = list(dict.fromkeys(scopes)) if scopes else default_scopes(user)
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown:
        raise Invalid(f"unknown scope(s) {unknown}; use {list(SCOPES)}",
                      details=[{"field": "body.scopes", "message": f"one of {list(SCOPES)}"}])
    if "admin" in wanted and not user.is_admin:
        raise Forbidden("only admins can create tokens with the admin scope",
                        code="insufficient_scope")
    if caller_scopes is not None:
        if not scopes:
            wanted = [s for s in wanted if s in caller_scopes]
        beyond = [s for s in wanted if s not in caller_scopes]
        if beyond:
            raise Forbidden(f"a token cannot create a token with more scopes than its own "
                            f"(missing {beyond})", code="insufficient_scope")
    secret, prefix, digest = security.new_api_token()
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    token = ApiToken(user_id=user.id, name=name, prefix=prefix, token_hash=digest,
                     scopes=wanted, expires_at=expires_at)
    db.add(token)
    db.flush()
    audit.record(db, "token.create", actor=user, target=f"token:{token.id}",
                 details={"name": name, "scopes": wanted, "prefix": prefix,
                          "expires_at": expires_at.isoformat() if expires_at else None})
    return token, secret


def tokens_query(user: User) -> Select[tuple[ApiToken]]:
    return select(ApiToken).where(ApiToken.user_id == user.id)


def list_tokens(db: Session, *, user: User) -> list[ApiToken]:
    return list(db.scalars(tokens_query(user).order_by(ApiToken.id)))


def revoke_token(db: Session, *, user: User, token_id: int) -> ApiToken:
    token = db.get(ApiToken, token_id)
    if token is None or (token.user_id != user.id and not user.is_admin):
        raise NotFound("token not found", code="token_not_found")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(db, "token.revoke", actor=user, target=f"token:{token.id}",
                     details={"owner_id": token.user_id, "prefix": token.prefix})
    db.flush()
    return token


def token_from_secret(db: Session, secret: str) -> tuple[ApiToken, User] | None:
    """The live token for ``secret`` and its user: known, not revoked, not expired, the user
    active. One query for both (every API request runs it)."""
    if security.token_prefix(secret) is None:
        return None
    row = db.execute(select(ApiToken, User).join(User, User.id == ApiToken.user_id)
                     .where(ApiToken.token_hash == security.sha256_hex(secret))).first()
    if row is None:
        return None
    token, user = row
    if token.revoked_at is not None or not user.is_active:
        return None
    now = utcnow()
    if token.expires_at is not None and token.expires_at <= now:
        return None
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        token.last_used_at = now
    return token, user


def user_from_token(db: Session, secret: str) -> User | None:
    found = token_from_secret(db, secret)
    return found[1] if found is not None else None


def user_from_request(db: Session, request: Request) -> User | None:
    """Bearer token first; else the session cookie, which needs a CSRF token on unsafe methods.

    Sets ``request.state.token_scopes`` (a token's effective scopes; ``None`` for a session)."""
    request.state.token_scopes = None
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret:
            return None
        found = token_from_secret(db, secret.strip())
        if found is None:
            return None
        token, user = found
        request.state.token_scopes = effective_scopes(token.scopes)
        return user
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


# the request dependencies in service.core.deps resolve through this domain
deps.provide("authenticate", user_from_request)
