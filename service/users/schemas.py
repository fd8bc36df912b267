from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field


class InvitationCreate(BaseModel):
    email: EmailStr
    name: str = Field("", max_length=200)
    is_admin: bool = False


class InvitationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    purpose: str
    email: str
    name: str
    is_admin: bool
    user_id: int | None
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None


class InvitationCreated(InvitationRead):
    link: str = Field(description="the one-time link; shown only in this response")


class PasswordSet(BaseModel):
    password: str = Field(max_length=256)
