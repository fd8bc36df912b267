"""Projects and their members."""
from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.auth import service as auth_service
from service.core.errors import Conflict, Invalid, NotFound
from service.core.pagination import paginate
from service.models import Membership, Project, Role, User


def role_of(db: Session, *, project_id: int, user: User) -> Role | None:
    if user.is_admin:
        return Role.owner
    role = db.scalar(select(Membership.role).where(
        Membership.project_id == project_id, Membership.user_id == user.id))
    return Role(role) if role else None


def create_project(db: Session, *, user: User, name: str, description: str = "",
                   settings: dict[str, Any] | None = None) -> Project:
    project = Project(name=name, description=description, settings=settings or {},
                      created_by_id=user.id)
    db.add(project)
    db.flush()
    db.add(Membership(project_id=project.id, user_id=user.id, role=Role.owner.value))
    db.flush()
    return project


def list_projects(db: Session, *, user: User, limit: int, cursor: str | None
                  ) -> tuple[list[Project], str | None]:
    stmt = select(Project)
    if not user.is_admin:
        stmt = stmt.where(Project.id.in_(
            select(Membership.project_id).where(Membership.user_id == user.id)))
    return paginate(db, stmt, Project.id, limit=limit, cursor=cursor, descending=True)


def update_project(db: Session, project: Project, changes: dict[str, Any]) -> Project:
    for key in ("name", "description"):
        if changes.get(key) is not None:
            setattr(project, key, changes[key])
    if changes.get("settings") is not None:
        project.settings = {**(project.settings or {}), **changes["settings"]}
    db.flush()
    return project


def delete_project(db: Session, project: Project) -> None:
    db.delete(project)
    db.flush()


def list_members(db: Session, *, project_id: int) -> list[Membership]:
    return list(db.scalars(select(Membership).where(Membership.project_id == project_id)
                           .order_by(Membership.id)))


def _owner_count(db: Session, project_id: int) -> int:
    return len(list(db.scalars(select(Membership.id).where(
        Membership.project_id == project_id, Membership.role == Role.owner.value))))


def add_member(db: Session, *, project_id: int, email: str, role: Role) -> Membership:
    user = auth_service.get_user_by_email(db, email)
    if user is None:
        raise Invalid(f"no user with email {email}",
                      details=[{"field": "body.email", "message": "unknown user"}])
    existing = db.scalar(select(Membership).where(
        Membership.project_id == project_id, Membership.user_id == user.id))
    if existing is not None:
        raise Conflict(f"{user.email} is already a member", code="already_member")
    membership = Membership(project_id=project_id, user_id=user.id, role=role.value)
    db.add(membership)
    db.flush()
    return membership


def get_membership(db: Session, *, project_id: int, user_id: int) -> Membership:
    membership = db.scalar(select(Membership).where(
        Membership.project_id == project_id, Membership.user_id == user_id))
    if membership is None:
        raise NotFound("member not found", code="member_not_found")
    return membership


def change_role(db: Session, *, project_id: int, user_id: int, role: Role) -> Membership:
    membership = get_membership(db, project_id=project_id, user_id=user_id)
    if membership.role == Role.owner.value and role != Role.owner and _owner_count(db, project_id) == 1:
        raise Conflict("a project needs at least one owner", code="last_owner")
    membership.role = role.value
    db.flush()
    return membership


def remove_member(db: Session, *, project_id: int, user_id: int) -> None:
    membership = get_membership(db, project_id=project_id, user_id=user_id)
    if membership.role == Role.owner.value and _owner_count(db, project_id) == 1:
        raise Conflict("a project needs at least one owner", code="last_owner")
    db.execute(delete(Membership).where(Membership.id == membership.id))
    db.flush()
