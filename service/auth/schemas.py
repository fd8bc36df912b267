from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from service.users.passwords import MIN_LENGTH

# the policy (service/users/passwords.py) checks the length and answers 422 weak_password; the
# schema states the same minimum without enforcing it first under another error code
_POLICY: dict[str, Any] = {"minLength": MIN_LENGTH}


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    email: str
    name: str
    is_admin: bool
    is_active: bool
    created_at: datetime


class UserCreate(BaseModel):
    email: EmailStr
    password: str = Field(max_length=256, json_schema_extra=_POLICY)
    name: str = Field("", max_length=200)
    is_admin: bool = False


class UserUpdate(BaseModel):
    name: str | None = Field(None, max_length=200)
    password: str | None = Field(None, max_length=256, json_schema_extra=_POLICY)
    is_admin: bool | None = None
    is_active: bool | None = None
    revoke_tokens: bool = Field(True, description=(
        "with a password reset, deactivation or admin-role removal: also revoke the user's API "
        "tokens (their browser sessions always end)"))


class PasswordChange(BaseModel):
    current_password: str = Field(max_length=256)
    new_password: str = Field(max_length=256, json_schema_extra=_POLICY)
    revoke_tokens: bool = Field(False, description="also revoke every API token of yours")


class PasswordChanged(BaseModel):
    sessions_revoked: int
    tokens_revoked: int


Scope = Literal["read", "write", "admin"]


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] | None = Field(None, min_length=1, description=(
        "read: safe methods; write: also unsafe methods; admin: admin routes (admins only). "
        "Default: all of yours"))
    expires_in_days: int | None = Field(None, ge=1, le=3650, description="None: never expires")


class TokenRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None = None


class TokenCreated(TokenRead):
    token: str = Field(description="the secret; shown only in this response")


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    at: datetime
    event: str
    actor_id: int | None
    actor_email: str
    ip: str
    project_id: int | None
    target: str
    details: dict[str, Any]
