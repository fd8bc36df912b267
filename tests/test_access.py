"""Walk every route registered in the app with every role and check allow/deny.

Routes are discovered from the app itself, so routes added later are checked automatically.
Each route must declare its access with exactly one marker dependency (see service/core/deps.py).
"""
from __future__ import annotations

import re

from fastapi.routing import APIRoute

from service.models import ROLE_RANK, Role

ROLES = ["anonymous", "outsider", "viewer", "annotator", "lead", "owner", "admin"]
_HASH = None


def _markers(route: APIRoute) -> list[str]:
    found = []
    for dep in route.dependant.dependencies:
        access = getattr(dep.call, "access", None)
        if access:
            found.append(access)
    return found


def _routes(app) -> list[tuple[APIRoute, str]]:
    out = []
    for router in app.state.routers:
        for route in router.routes:
            if isinstance(route, APIRoute):
                markers = _markers(route)
                assert len(markers) == 1, f"{route.path} {route.methods}: access markers {markers}"
                out.append((route, markers[0]))
    return out


def _world(db):
    """Users for each role, tokens, and a project (plus another project for the outsider)."""
    global _HASH
    from service.auth import service as auth_service
    from service.core import security
    from service.models import Membership, Project, User

    if _HASH is None:
        _HASH = security.hash_password("x" * 12)
    users = {}
    for role in ROLES[1:]:
        user = User(email=f"{role}@example.com", name=role, password_hash=_HASH,
                    is_admin=role == "admin")
        db.add(user)
        db.flush()
        users[role] = user
    project = Project(name="walked", created_by_id=users["owner"].id)
    other = Project(name="other", created_by_id=users["outsider"].id)
    db.add_all([project, other])
    db.flush()
    for role in ("viewer", "annotator", "lead", "owner"):
        db.add(Membership(project_id=project.id, user_id=users[role].id, role=role))
    db.add(Membership(project_id=other.id, user_id=users["outsider"].id, role="owner"))
    tokens = {role: auth_service.create_token(db, user=u, name="walk")[1] for role, u in users.items()}
    db.commit()
    return project.id, tokens


def _expected(marker: str, role: str) -> bool:
    if marker == "public":
        return True
    if role == "anonymous":
        return False
    if marker == "user":
        return True
    if marker == "admin":
        return role == "admin"
    assert marker.startswith("project:"), marker
    if role == "admin":
        return True
    if role == "outsider":
        return False
    return ROLE_RANK[Role(role)] >= ROLE_RANK[Role(marker.split(":", 1)[1])]


def _denied(resp, marker: str) -> bool:
    if resp.status_code in (401, 403):
        return True
    if marker != "public" and resp.status_code == 303 and resp.headers.get("location", "").startswith("/login"):
        return True
    if resp.status_code == 404:
        if resp.headers.get("content-type", "").startswith("application/json"):
            return resp.json().get("error", {}).get("code") == "project_not_found"
        return 'data-error-code="project_not_found"' in resp.text
    return False


def test_every_route_declares_access(app):
    routes = _routes(app)
    assert len(routes) >= 20


def test_walk_every_route_with_every_role(app, client, db):
    from tests.conftest import _truncate_all

    failures = []
    routes = _routes(app)
    dirty = True
    for route, marker in routes:
        for method in sorted(route.methods - {"HEAD"}):
            for role in ROLES:
                if dirty:  # rebuild only after a request that may have changed something
                    _truncate_all()
                    db.expire_all()
                    pid, tokens = _world(db)
                    dirty = False
                path = route.path.replace("{project_id}", str(pid))
                path = re.sub(r"\{[^}]+\}", "999999", path)
                headers = {"Authorization": f"Bearer {tokens[role]}"} if role in tokens else {}
                kwargs = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
                resp = client.request(method, path, headers=headers, follow_redirects=False, **kwargs)
                dirty = method != "GET" and resp.status_code < 400
                if resp.status_code >= 500:
                    failures.append(f"{method} {route.path} as {role}: {resp.status_code}")
                    continue
                allowed = not _denied(resp, marker)
                if allowed != _expected(marker, role):
                    failures.append(f"{method} {route.path} ({marker}) as {role}: "
                                    f"{resp.status_code}, expected {'allow' if _expected(marker, role) else 'deny'}")
    assert not failures, "\n".join(failures)
