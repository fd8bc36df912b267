from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy import select

from service.core.deps import (
    Access,
    CurrentUser,
    ProjectLead,
    ProjectOwner,
    ProjectViewer,
    SessionDep,
)
from service.core.errors import Forbidden
from service.core.pagination import CursorQ, LimitQ, Page, paginate
from service.models import Membership, Role
from service.projects import schemas
from service.projects import service as projects_service

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])


def _read(project, role) -> schemas.ProjectRead:
    out = schemas.ProjectRead.model_validate(project)
    out.my_role = role
    return out


def _member(m: Membership) -> schemas.MemberRead:
    return schemas.MemberRead(user_id=m.user_id, email=m.user.email, name=m.user.name,
                              role=m.role, created_at=m.created_at)


@router.post("", response_model=schemas.ProjectRead, status_code=status.HTTP_201_CREATED)
def create_project(body: schemas.ProjectCreate, user: CurrentUser, db: SessionDep):
    project = projects_service.create_project(db, user=user, name=body.name,
                                              description=body.description, settings=body.settings)
    return _read(project, Role.owner)


@router.get("", response_model=Page[schemas.ProjectRead])
def list_projects(user: CurrentUser, db: SessionDep, limit: LimitQ = 50, cursor: CursorQ = None):
    items, nxt = projects_service.list_projects(db, user=user, limit=limit, cursor=cursor)
    return {"items": [_read(p, projects_service.role_of(db, project_id=p.id, user=user))
                      for p in items], "next_cursor": nxt}


@router.get("/{project_id}", response_model=schemas.ProjectRead)
def get_project(access: ProjectViewer):
    return _read(access.project, access.role)


@router.patch("/{project_id}", response_model=schemas.ProjectRead)
def update_project(body: schemas.ProjectUpdate, access: ProjectLead, db: SessionDep):
    project = projects_service.update_project(db, access.project, body.model_dump(exclude_unset=True))
    return _read(project, access.role)


@router.delete("/{project_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_project(access: ProjectOwner, db: SessionDep) -> Response:
    projects_service.delete_project(db, access.project)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{project_id}/members", response_model=Page[schemas.MemberRead])
def list_members(access: ProjectViewer, db: SessionDep, limit: LimitQ = 100, cursor: CursorQ = None):
    items, nxt = paginate(db, select(Membership).where(Membership.project_id == access.project.id),
                          Membership.id, limit=limit, cursor=cursor)
    return {"items": [_member(m) for m in items], "next_cursor": nxt}


def _check_can_manage(access: Access, db, *, user_id: int | None, new_role: Role | None) -> None:
    """Leads manage annotators and viewers; only owners grant or change lead/owner roles."""
    if access.role == Role.owner:
        return
    if new_role is not None and new_role.at_least(Role.lead):
        raise Forbidden("only an owner can grant the lead or owner role")
    if user_id is not None:
        target = projects_service.get_membership(db, project_id=access.project.id, user_id=user_id)
        if Role(target.role).at_least(Role.lead):
            raise Forbidden("only an owner can change a lead or owner")


@router.post("/{project_id}/members", response_model=schemas.MemberRead,
             status_code=status.HTTP_201_CREATED)
def add_member(body: schemas.MemberAdd, access: ProjectLead, db: SessionDep):
    _check_can_manage(access, db, user_id=None, new_role=body.role)
    m = projects_service.add_member(db, project_id=access.project.id, email=body.email, role=body.role,
                                   actor=access.user)
    return _member(m)


@router.patch("/{project_id}/members/{user_id}", response_model=schemas.MemberRead)
def change_member_role(user_id: int, body: schemas.MemberUpdate, access: ProjectLead, db: SessionDep):
    _check_can_manage(access, db, user_id=user_id, new_role=body.role)
    m = projects_service.change_role(db, project_id=access.project.id, user_id=user_id, role=body.role,
                                     actor=access.user)
    return _member(m)


@router.delete("/{project_id}/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_member(user_id: int, access: ProjectLead, db: SessionDep) -> Response:
    _check_can_manage(access, db, user_id=user_id, new_role=None)
    projects_service.remove_member(db, project_id=access.project.id, user_id=user_id,
                                   actor=access.user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
