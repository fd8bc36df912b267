from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.models import Role


class ProjectCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)
    settings: dict[str, Any] = Field(default_factory=dict)


class ProjectUpdate(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=10_000)
    settings: dict[str, Any] | None = None


class ProjectRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    description: str
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    my_role: Role | None = None


class MemberAdd(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    role: Role = Role.annotator


class MemberUpdate(BaseModel):
    role: Role


class MemberRead(BaseModel):
    user_id: int
    email: str
    name: str
    role: Role
    created_at: datetime
