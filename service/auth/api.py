from __future__ import annotations

from fastapi import APIRouter, Request, status
from sqlalchemy import select

from service.auth import audit, schemas
from service.auth import service as auth_service
from service.core.config import get_settings
from service.core.deps import AdminUser, CurrentUser, SessionDep
from service.core.pagination import CursorQ, LimitQ, Page, page
from service.models import ApiToken, User
from service.users import passwords

router = APIRouter(prefix="/api/v1", tags=["auth"])


@router.get("/me", response_model=schemas.UserRead)
def read_me(user: CurrentUser) -> User:
    return user


@router.post("/tokens", response_model=schemas.TokenCreated, status_code=status.HTTP_201_CREATED)
def create_token(body: schemas.TokenCreate, request: Request, user: CurrentUser,
                 db: SessionDep) -> dict:
    """A new token; the secret is in this response only. Never more scopes than the caller's."""
    token, secret = auth_service.create_token(
        db, user=user, name=body.name, scopes=body.scopes, expires_in_days=body.expires_in_days,
        caller_scopes=getattr(request.state, "token_scopes", None))
    data = schemas.TokenRead.model_validate(token).model_dump()
    return {**data, "token": secret}


@router.post("/me/password", response_model=schemas.PasswordChanged)
def change_password(body: schemas.PasswordChange, request: Request, user: CurrentUser,
                    db: SessionDep) -> dict:
    """Change your own password: every other browser session of yours ends (this one stays)."""
    passwords.check_password(body.new_password, email=user.email, field="body.new_password")
    keep = request.cookies.get(get_settings().session_cookie_name)
    revoked = auth_service.change_password(db, user=user, current_password=body.current_password,
                                           new_password=body.new_password, keep_sid=keep,
                                           revoke_api_tokens=body.revoke_tokens)
    return {"sessions_revoked": revoked["sessions"], "tokens_revoked": revoked["tokens"]}


@router.get("/tokens", response_model=Page[schemas.TokenRead])
def list_tokens(user: CurrentUser, db: SessionDep, limit: LimitQ = 50, cursor: CursorQ = None):
    """Your API tokens (revoked and expired ones too, marked so), oldest first."""
    return page(db, auth_service.tokens_query(user), ApiToken.id, limit=limit,
                cursor=cursor)


@router.delete("/tokens/{token_id}", response_model=schemas.TokenRead)
def revoke_token(token_id: int, user: CurrentUser, db: SessionDep):
    return auth_service.revoke_token(db, user=user, token_id=token_id)


@router.get("/users", response_model=Page[schemas.UserRead])
def list_users(_: AdminUser, db: SessionDep, limit: LimitQ = 50, cursor: CursorQ = None) -> dict:
    return page(db, select(User), User.id, limit=limit, cursor=cursor)


@router.post("/users", response_model=schemas.UserRead, status_code=status.HTTP_201_CREATED)
def create_user(body: schemas.UserCreate, admin: AdminUser, db: SessionDep) -> User:
    passwords.check_password(body.password, email=body.email, field="body.password")
    user = auth_service.create_user(db, email=body.email, password=body.password,
                                    name=body.name, is_admin=body.is_admin)
    audit.record(db, "user.create", actor=admin, target=f"user:{user.id}",
                 details={"email": user.email, "is_admin": user.is_admin})
    return user


@router.get("/users/{user_id}", response_model=schemas.UserRead)
def get_user(user_id: int, _: AdminUser, db: SessionDep) -> User:
    return auth_service.get_user(db, user_id)


@router.patch("/users/{user_id}", response_model=schemas.UserRead)
def update_user(user_id: int, body: schemas.UserUpdate, admin: AdminUser, db: SessionDep) -> User:
    """Change a user. A password reset, deactivation or admin-role removal ends the user's
    sessions and, unless ``revoke_tokens`` is false, revokes their API tokens."""
    user = auth_service.get_user(db, user_id)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("password") is not None:
        passwords.check_password(changes["password"], email=user.email, field="body.password")
    revoke = changes.pop("revoke_tokens", True)
    return auth_service.update_user(db, actor=admin, user=user, changes=changes,
                                    revoke_api_tokens=revoke)


@router.get("/audit-events", response_model=Page[schemas.AuditEventRead])
def list_audit_events(_: AdminUser, db: SessionDep, limit: LimitQ = 50, cursor: CursorQ = None,
                      event: str | None = None, actor_id: int | None = None) -> dict:
    """Security events, newest first. ``event``: an exact name, or a prefix ending in a dot
    (``login.``)."""
    items, nxt = audit.list_events(db, limit=limit, cursor=cursor, event=event, actor_id=actor_id)
    return {"items": items, "next_cursor": nxt}
