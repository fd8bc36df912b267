"""Small factory helpers and login helpers (no fixture files)."""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import pytest

_seq = itertools.count(1)
PASSWORD = "correct horse battery staple"


@dataclass
class Actor:
    user_id: int
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_user(db, *, email: str | None = None, is_admin: bool = False, password: str = PASSWORD):
    from service.auth import service as auth_service

    email = email or f"user{next(_seq)}@example.com"
    user = auth_service.create_user(db, email=email, password=password, is_admin=is_admin)
    db.commit()
    return user


def make_actor(db, *, is_admin: bool = False, email: str | None = None) -> Actor:
    from service.auth import service as auth_service

    user = make_user(db, email=email, is_admin=is_admin)
    _tok, secret = auth_service.create_token(db, user=user, name="test")
    db.commit()
    return Actor(user.id, user.email, secret)


def make_project(db, owner, *, name: str = "Project"):
    from service.projects import service as projects_service

    project = projects_service.create_project(db, user=owner, name=name)
    db.commit()
    return project


def add_member(db, project, user, role: str):
    from service.models import Membership

    db.add(Membership(project_id=project.id, user_id=user.id, role=role))
    db.commit()


def browser_login(client, email: str, password: str = PASSWORD) -> str:
    """Log in through the real form; returns the CSRF token of the new session."""
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    resp = client.post("/login", data={"email": email, "password": password, "csrf_token": csrf,
                                       "next": "/projects"}, follow_redirects=False)
    assert resp.status_code == 303, resp.text
    page = client.get("/projects")
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text).group(1)


@pytest.fixture
def factories():
    import sys

    return sys.modules[__name__]
