from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from service.core.deps import Access, CurrentUser, ProjectLead, ProjectViewer, SessionDep
from service.core.errors import AppError
from service.core.templating import render, templates
from service.models import Role
from service.projects import service as projects_service
from service.projects.api import _check_can_manage

router = APIRouter(include_in_schema=False)



@dataclass(frozen=True)
class Tab:
    """A project tab: shown on every project page to members whose role opens ``href``."""

    href: str  # path suffix after /projects/{id}
    label: str
    order: int
    min_role: Role = Role.viewer


# Each domain adds its tabs with add_tab() when it registers its pages
PROJECT_NAV: list[Tab] = []


def add_tab(href: str, label: str, *, order: int, min_role: Role = Role.viewer) -> None:
    if all(t.href != href for t in PROJECT_NAV):
        PROJECT_NAV.append(Tab(href, label, order, min_role))
        PROJECT_NAV.sort(key=lambda t: t.order)


def project_tabs(nav_project: tuple[int, str] | None, access: Access | None,
                 path: str = "") -> list[tuple[str, str, bool]]:
    """(url, label, current) of the tabs the caller may open; ``current`` marks the best match.

    Uses the plain snapshots (project id, role) only: an error page renders after a rollback."""
    if nav_project is None or access is None:
        return []
    base = f"/projects/{nav_project[0]}"
    tabs = [t for t in PROJECT_NAV if access.role.at_least(t.min_role)]
    matches = [t.href for t in tabs if path == base + t.href or path.startswith(base + t.href + "/")]
    best = max(matches, key=len, default=None)
    return [(base + t.href, t.label, t.href == best) for t in tabs]


add_tab("/members", "Members", order=120)
templates.env.globals["project_tabs"] = project_tabs
# Each domain may add a stats provider: fn(db, project_id) -> list[(label, value)]
PROJECT_STATS: list = []


@router.get("/projects", response_class=HTMLResponse)
def projects_page(request: Request, user: CurrentUser, db: SessionDep, cursor: str | None = None):
    items, nxt = projects_service.list_projects(db, user=user, limit=50, cursor=cursor)
    rows = [(p, projects_service.role_of(db, project_id=p.id, user=user)) for p in items]
    return render(request, "pages/projects.html", projects=rows, next_cursor=nxt)


@router.post("/projects")
def create_project_form(user: CurrentUser, db: SessionDep, name: Annotated[str, Form()],
                        description: Annotated[str, Form()] = ""):
    project = projects_service.create_project(db, user=user, name=name.strip()[:200] or "Untitled",
                                              description=description)
    return RedirectResponse(f"/projects/{project.id}", status_code=303)


@router.get("/projects/{project_id}", response_class=HTMLResponse)
def project_page(request: Request, access: ProjectViewer, db: SessionDep):
    stats: list[tuple[str, object]] = []
    for provider in PROJECT_STATS:
        stats.extend(provider(db, access.project.id))
    return render(request, "pages/project.html", stats=stats)


def _members_page(request: Request, access, db, *, error: str | None = None, message: str | None = None,
                  status_code: int = 200) -> HTMLResponse:
    members = projects_service.list_members(db, project_id=access.project.id)
    return render(request, "pages/members.html", status_code=status_code, members=members,
                  can_manage=access.at_least(Role.lead), roles=[r.value for r in Role],
                  error=error, message=message)


@router.get("/projects/{project_id}/members", response_class=HTMLResponse)
def members_page(request: Request, access: ProjectViewer, db: SessionDep):
    return _members_page(request, access, db)


@router.post("/projects/{project_id}/members", response_class=HTMLResponse)
def add_member_form(request: Request, access: ProjectLead, db: SessionDep,
                    email: Annotated[str, Form()], role: Annotated[Role, Form()] = Role.annotator):
    try:
        with db.begin_nested():
            _check_can_manage(access, db, user_id=None, new_role=role)
            projects_service.add_member(db, project_id=access.project.id, email=email, role=role)
    except AppError as exc:
        return _members_page(request, access, db, error=exc.message, status_code=exc.status_code)
    return _members_page(request, access, db, message=f"Added {email} as {role.value}.")


@router.post("/projects/{project_id}/members/{user_id}/role", response_class=HTMLResponse)
def change_role_form(request: Request, user_id: int, access: ProjectLead, db: SessionDep,
                     role: Annotated[Role, Form()]):
    try:
        with db.begin_nested():
            _check_can_manage(access, db, user_id=user_id, new_role=role)
            projects_service.change_role(db, project_id=access.project.id, user_id=user_id, role=role)
    except AppError as exc:
        return _members_page(request, access, db, error=exc.message, status_code=exc.status_code)
    return RedirectResponse(f"/projects/{access.project.id}/members", status_code=303)


@router.post("/projects/{project_id}/members/{user_id}/remove", response_class=HTMLResponse)
def remove_member_form(request: Request, user_id: int, access: ProjectLead, db: SessionDep):
    try:
        with db.begin_nested():
            _check_can_manage(access, db, user_id=user_id, new_role=None)
            projects_service.remove_member(db, project_id=access.project.id, user_id=user_id)
    except AppError as exc:
        return _members_page(request, access, db, error=exc.message, status_code=exc.status_code)
    return RedirectResponse(f"/projects/{access.project.id}/members", status_code=303)
