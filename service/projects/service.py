"""Projects and their members."""
from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, select, update
from sqlalchemy.orm import Session

from service.auth import audit
from service.auth import service as auth_service
from service.core import deps, storage
from service.core.errors import Conflict, Invalid, NotFound
from service.core.pagination import paginate
from service.models import Membership, Project, Role, User


def role_of(db: Session, *, project_id: int, user: User) -> Role | None:
    if user.is_admin:
        return Role.owner
    role = db.scalar(select(Membership.role).where(
        Membership.project_id == project_id, Membership.user_id == user.id))
    return Role(role) if role else None


def project_and_role(db: Session, *, project_id: int, user: User) -> tuple[Project | None,
                                                                            Role | None]:
    """The project and the caller's role in it, in one query (every project route runs it)."""
    row = db.execute(select(Project, Membership.role).outerjoin(
        Membership, and_(Membership.project_id == Project.id, Membership.user_id == user.id))
        .where(Project.id == project_id)).first()
    if row is None:
        return None, None
    project, role = row
    if user.is_admin:
        return project, Role.owner
    return project, (Role(role) if role else None)


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
    """Delete the project and, once that commits, its files (documents, imports, exports)."""
    from service.models import Dataset, DatasetExport, DatasetVersion, Document, ImportJob

    pid = project.id
    paths = [*db.scalars(select(Document.storage_path).where(Document.project_id == pid)),
             *db.scalars(select(ImportJob.storage_path).where(ImportJob.project_id == pid)),
             *db.scalars(select(DatasetExport.path).join(DatasetVersion).join(Dataset)
                         .where(Dataset.project_id == pid)),
             storage.area(f"documents/{pid}")]
    db.delete(project)
    db.flush()
    storage.remove_after_commit(db, paths)


def list_members(db: Session, *, project_id: int) -> list[Membership]:
    return list(db.scalars(select(Membership).where(Membership.project_id == project_id)
                           .order_by(Membership.id)))


def _lock_memberships(db: Session, project_id: int) -> list[Membership]:
    """Lock the project's memberships for the rest of the transaction and return them, fresh.

    PostgreSQL: ``SELECT ... FOR UPDATE`` (a concurrent role change waits, then reads the rows
    as committed). SQLite: a no-op ``UPDATE`` first, which takes the database's write lock
    before anything is read, so the read below is the latest state too.
    """
    if db.get_bind().dialect.name == "sqlite":
        db.execute(update(Membership).where(Membership.project_id == project_id)
                   .values(role=Membership.role))
    rows = db.scalars(select(Membership).where(Membership.project_id == project_id)
                      .order_by(Membership.id).with_for_update()
                      .execution_options(populate_existing=True))
    return list(rows)


def _leaves_no_owner(memberships: list[Membership], user_id: int, role: Role | None) -> bool:
    """Whether giving ``user_id`` the ``role`` (None: removing them) takes the last owner."""
    others = sum(1 for m in memberships if m.user_id != user_id and m.role == Role.owner.value)
    return others == 0 and role != Role.owner and any(
        m.user_id == user_id and m.role == Role.owner.value for m in memberships)


def add_member(db: Session, *, project_id: int, email: str, role: Role,
               actor: User | None = None) -> Membership:
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
    audit.record(db, "member.add", actor=actor, project_id=project_id, target=f"user:{user.id}",
                 details={"role": role.value})
    return membership


def get_membership(db: Session, *, project_id: int, user_id: int) -> Membership:
    membership = db.scalar(select(Membership).where(
        Membership.project_id == project_id, Membership.user_id == user_id))
    if membership is None:
        raise NotFound("member not found", code="member_not_found")
    return membership


def change_role(db: Session, *, project_id: int, user_id: int, role: Role,
                actor: User | None = None) -> Membership:
    """Change a member's role, with the project's memberships locked: a project always keeps
    an owner, however many owners demote each other at once."""
    memberships = _lock_memberships(db, project_id)
    membership = next((m for m in memberships if m.user_id == user_id), None)
    if membership is None:
        raise NotFound("member not found", code="member_not_found")
    if _leaves_no_owner(memberships, user_id, role):
        raise Conflict("a project needs at least one owner", code="last_owner")
    before = membership.role
    membership.role = role.value
    db.flush()
    if before != role.value:
        audit.record(db, "member.role", actor=actor, project_id=project_id,
                     target=f"user:{user_id}", details={"from": before, "to": role.value})
    return membership


def remove_member(db: Session, *, project_id: int, user_id: int, actor: User | None = None) -> None:
    memberships = _lock_memberships(db, project_id)
    membership = next((m for m in memberships if m.user_id == user_id), None)
    if membership is None:
        raise NotFound("member not found", code="member_not_found")
    if _leaves_no_owner(memberships, user_id, None):
        raise Conflict("a project needs at least one owner", code="last_owner")
    db.execute(delete(Membership).where(Membership.id == membership.id))
    db.flush()
    audit.record(db, "member.remove", actor=actor, project_id=project_id,
                 target=f"user:{user_id}", details={"role": membership.role})


# the request dependencies in service.core.deps resolve through this domain
deps.provide("project_and_role", project_and_role)
