from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import select

from service.auth import schemas
from service.auth import service as auth_service
from service.core import security
from service.core.deps import AdminUser, CurrentUser, SessionDep
from service.core.pagination import CursorQ, LimitQ, Page, paginate
from service.models import User

router = APIRouter(prefix="/api/v1", tags=["auth"])


@router.get("/me", response_model=schemas.UserRead)
def read_me(user: CurrentUser) -> User:
    return user


@router.post("/tokens", response_model=schemas.TokenCreated, status_code=status.HTTP_201_CREATED)
def create_token(body: schemas.TokenCreate, user: CurrentUser, db: SessionDep) -> dict:
    token, secret = auth_service.create_token(db, user=user, name=body.name, scopes=body.scopes)
    data = schemas.TokenRead.model_validate(token).model_dump()
    return {**data, "token": secret}


@router.get("/tokens", response_model=list[schemas.TokenRead])
def list_tokens(user: CurrentUser, db: SessionDep) -> list:
    return auth_service.list_tokens(db, user=user)


@router.delete("/tokens/{token_id}", response_model=schemas.TokenRead)
def revoke_token(token_id: int, user: CurrentUser, db: SessionDep):
    return auth_service.revoke_token(db, user=user, token_id=token_id)


@router.get("/users", response_model=Page[schemas.UserRead])
def list_users(_: AdminUser, db: SessionDep, limit: LimitQ = 50, cursor: CursorQ = None) -> dict:
    items, nxt = paginate(db, select(User), User.id, limit=limit, cursor=cursor)
    return {"items": items, "next_cursor": nxt}


@router.post("/users", response_model=schemas.UserRead, status_code=status.HTTP_201_CREATED)
def create_user(body: schemas.UserCreate, _: AdminUser, db: SessionDep) -> User:
    return auth_service.create_user(db, email=body.email, password=body.password,
                                    name=body.name, is_admin=body.is_admin)


@router.get("/users/{user_id}", response_model=schemas.UserRead)
def get_user(user_id: int, _: AdminUser, db: SessionDep) -> User:
    return auth_service.get_user(db, user_id)


@router.patch("/users/{user_id}", response_model=schemas.UserRead)
def update_user(user_id: int, body: schemas.UserUpdate, _: AdminUser, db: SessionDep) -> User:
    user = auth_service.get_user(db, user_id)
    changes = body.model_dump(exclude_unset=True)
    if "password" in changes:
        user.password_hash = security.hash_password(changes.pop("password"))
    for key, value in changes.items():
        if value is not None:
            setattr(user, key, value)
    db.flush()
    return user
