"""Request dependencies: the DB session, the current user, and project access by role.

Every route declares its access with exactly one of ``Public``, ``CurrentUser``, ``AdminUser``
or ``ProjectAccess(role)``; tests/test_access.py walks every registered route and checks it.
The same dependency enforces an API token's scopes: ``read`` for safe methods, ``write`` for
unsafe ones, ``admin`` (besides ``is_admin``) for admin routes.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.core.config import get_settings
from service.core.db import session_scope
from service.core.errors import Forbidden, NotFound, Unauthorized
from service.models import Project, Role, User

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def writes_db(endpoint: Any) -> Any:
    """Marks a route that writes although its method is safe (``GET /review/next`` leases a
    sample), so its unit of work starts as a writing transaction (SQLite: ``BEGIN IMMEDIATE``)."""
    endpoint.writes_db = True
    return endpoint


def request_writes(request: Request) -> bool:
    """Unsafe methods, and routes marked ``writes_db``, write; the others only read."""
    route = request.scope.get("route")
    return (request.method not in SAFE_METHODS
            or getattr(getattr(route, "endpoint", None), "writes_db", False))


def get_db(request: Request) -> Iterator[Session]:
    """The request's unit of work: committed when the handler returns, rolled back on error.

    A request that only reads takes no write lock on SQLite (see ``request_writes``)."""
    with session_scope(write=request_writes(request)) as session:
        yield session


_write_gates: dict[int, asyncio.Semaphore] = {}


async def sqlite_write_gate(request: Request) -> AsyncIterator[None]:
    """App-wide: on SQLite, writing requests enter the thread pool one at a time.

    SQLite has one writer. Writers that waited for it inside the pool's threads (40) could fill
    every thread while the one holding the lock needed a thread for its next step: all of them
    then timed out together. Waiting here, in the event loop, costs no thread."""
    if not get_settings().is_sqlite or not request_writes(request):
        yield
        return
    loop = id(asyncio.get_running_loop())
    gate = _write_gates.setdefault(loop, asyncio.Semaphore(1))
    async with gate:
        yield


SessionDep = Annotated[Session, Depends(get_db, scope="function")]


# The domains behind these dependencies plug themselves in when imported (``core`` imports no
# domain): ``service.auth.service`` resolves the caller, ``service.projects.service`` their role.
_providers: dict[str, Callable[..., Any]] = {}


def provide(name: str, fn: Callable[..., Any]) -> None:
    """Register ``fn`` as ``name`` (``authenticate`` or ``project_and_role``)."""
    _providers[name] = fn


def _provider(name: str) -> Callable[..., Any]:
    fn = _providers.get(name)
    if fn is None:
        raise RuntimeError(f"no {name!r} provider registered (import its domain's service)")
    return fn


def _authenticate(request: Request, db: Session) -> User | None:
    cached = getattr(request.state, "user", None)
    if cached is not None:
        return cast(User, cached)
    user: User | None = _provider("authenticate")(db, request)
    request.state.user = user
    if user is not None:
        request.state.who = (user.email, user.is_admin)
    return user


def public(request: Request) -> None:
    """Marker: route needs no authentication."""


public.access = "public"  # type: ignore[attr-defined]


UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


async def csrf_candidate(request: Request) -> str | None:
    """The CSRF token the client sent: header ``X-CSRF-Token`` or form field ``csrf_token``."""
    token = request.headers.get("x-csrf-token")
    if token is None and request.method in UNSAFE_METHODS:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()  # FastAPI has parsed it already; this is the cached copy
            value = form.get("csrf_token")
            token = value if isinstance(value, str) else None
    request.state.csrf_candidate = token
    return token


def _needed_scope(request: Request) -> str:
    """A token scope each request needs: ``read`` for safe methods, ``write`` for unsafe ones
    (and for a safe-method route marked ``writes_db``)."""
    route = request.scope.get("route")
    if request.method in UNSAFE_METHODS or getattr(getattr(route, "endpoint", None),
                                                   "writes_db", False):
        return "write"
    return "read"


def require_scope(request: Request, scope: str) -> None:
    """Refuse an API token that lacks ``scope``; a browser session has every scope."""
    scopes = getattr(request.state, "token_scopes", None)
    if scopes is not None and scope not in scopes:
        raise Forbidden(f"this API token lacks the {scope!r} scope", code="insufficient_scope")


def current_user(request: Request, db: SessionDep,
                 _csrf: Annotated[str | None, Depends(csrf_candidate)] = None) -> User:
    user = _authenticate(request, db)
    if user is None:
        raise Unauthorized("authentication required")
    require_scope(request, _needed_scope(request))
    return user


current_user.access = "user"  # type: ignore[attr-defined]


def admin_user(request: Request, db: SessionDep,
               _csrf: Annotated[str | None, Depends(csrf_candidate)] = None) -> User:
    user = current_user(request, db)
    if not user.is_admin:
        raise Forbidden("admin only")
    require_scope(request, "admin")
    return user


admin_user.access = "admin"  # type: ignore[attr-defined]

Public = Annotated[None, Depends(public)]
CurrentUser = Annotated[User, Depends(current_user)]
AdminUser = Annotated[User, Depends(admin_user)]


@dataclass
class Access:
    """The caller's standing in the project named by the route's ``project_id``."""

    project: Project
    user: User
    role: Role

    def at_least(self, role: Role) -> bool:
        return self.role.at_least(role)


def project_access(min_role: Role) -> Any:
    def dependency(project_id: int, request: Request, db: SessionDep,
                   _csrf: Annotated[str | None, Depends(csrf_candidate)] = None) -> Access:
        user = current_user(request, db)
        project, role = _provider("project_and_role")(db, project_id=project_id, user=user)
        if project is None or role is None:
            raise NotFound("project not found", code="project_not_found")
        request.state.nav_project = (project.id, project.name)
        if not role.at_least(min_role):
            raise Forbidden(f"requires role {min_role.value} or higher in this project")
        access = Access(project=project, user=user, role=role)
        request.state.access = access
        return access

    dependency.access = f"project:{min_role.value}"  # type: ignore[attr-defined]
    dependency.min_role = min_role  # type: ignore[attr-defined]
    return Depends(dependency)


ProjectViewer = Annotated[Access, project_access(Role.viewer)]
ProjectAnnotator = Annotated[Access, project_access(Role.annotator)]
ProjectLead = Annotated[Access, project_access(Role.lead)]
ProjectOwner = Annotated[Access, project_access(Role.owner)]
