"""Items 4 and 5 under real concurrency (PostgreSQL when ANNOTUNE_TEST_DATABASE_URL is set)."""
from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from service.core.errors import AppError


def test_twenty_concurrent_mutual_demotions_leave_an_owner(db, factories):
    from service.core.db import get_sessionmaker
    from service.models import Membership, Role, User
    from service.projects import service as projects_service

    pairs = []
    for i in range(20):
        a, b = factories.make_user(db), factories.make_user(db)
        project = factories.make_project(db, db.get(User, a.id), name=f"p{i}")
        factories.add_member(db, project, db.get(User, b.id), "owner")
        pairs += [(project.id, a.id, b.id), (project.id, b.id, a.id)]
    barrier = threading.Barrier(len(pairs))
    maker = get_sessionmaker()

    def demote(job):
        project_id, actor_id, target_id = job
        barrier.wait(timeout=30)  # all start together (fewer connections than threads in the pool)
        with maker() as session:
            actor = session.get(User, actor_id)
            try:
                projects_service.change_role(session, project_id=project_id, user_id=target_id,
                                             role=Role.lead, actor=actor)
                session.commit()
                return "ok"
            except AppError as exc:
                session.rollback()
                return exc.code

    with ThreadPoolExecutor(len(pairs)) as pool:
        results = list(pool.map(demote, pairs))
    assert results.count("ok") == 20 and results.count("last_owner") == 20, results
    db.expire_all()
    owners = dict(db.execute(select(Membership.project_id, func.count()).where(
        Membership.role == Role.owner.value).group_by(Membership.project_id)).all())
    assert len(owners) == 20 and set(owners.values()) == {1}


def _login(client, email, password):
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return client.post("/login", data={"email": email, "password": password, "csrf_token": csrf},
                       follow_redirects=False)


def test_forty_concurrent_wrong_logins_are_limited_to_the_limit(app, db, factories):
    from fastapi.testclient import TestClient

    from service.core.config import get_settings

    user = factories.make_user(db)
    limit = get_settings().login_rate_limit
    barrier = threading.Barrier(40)

    def attempt(_):
        with TestClient(app, base_url="http://testserver") as c:
            page = c.get("/login")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
            barrier.wait(timeout=30)
            return c.post("/login", data={"email": user.email, "password": "wrong",
                                          "csrf_token": csrf}).status_code

    with ThreadPoolExecutor(40) as pool:
        statuses = list(pool.map(attempt, range(40)))
    assert statuses.count(401) == limit, statuses
    assert statuses.count(429) == 40 - limit
    from service.models import AuditEvent

    events = db.scalars(select(AuditEvent.event)).all()
    assert events.count("login.failure") == limit and events.count("login.limited") == 40 - limit


def test_password_spray_from_one_address_is_limited(client, db, factories, monkeypatch):
    from service.core.config import get_settings

    monkeypatch.setattr(get_settings(), "login_rate_limit_per_address", 20)
    statuses = [_login(client, f"spray{i}@example.com", "Winter2026!").status_code
                for i in range(60)]
    assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}


def test_limited_message_says_how_long_to_wait_and_success_gives_back(client, db, factories):
    user = factories.make_user(db)
    for _ in range(4):
        assert _login(client, user.email, "wrong").status_code == 401
    assert _login(client, user.email, factories.PASSWORD).status_code == 303  # resets email+ip
    for _ in range(5):
        assert _login(client, user.email, "wrong").status_code == 401
    limited = _login(client, user.email, "wrong")
    assert limited.status_code == 429
    assert re.search(r"try again in \d+ min( \d+ s)?", limited.text), limited.text
    assert 0 < int(limited.headers["retry-after"]) <= 300
