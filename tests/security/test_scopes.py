"""Item 3: token scopes enforced by the access dependency; tokens expire when asked to."""
from __future__ import annotations

import re
from datetime import timedelta

from service.core.deps import UNSAFE_METHODS
from tests.test_access import _routes


def _token(db, user, scopes, **kw):
    from service.auth import service as auth_service

    _tok, secret = auth_service.create_token(db, user=user, name="scoped", scopes=scopes, **kw)
    db.commit()
    return {"Authorization": f"Bearer {secret}"}


def test_read_token_gets_403_on_every_unsafe_route(app, client, db, factories):
    """Walks every registered route: each unsafe method refuses a read-only token with 403
    (before any lookup, so no side effect), and safe methods are not refused for the scope."""
    from service.models import User

    admin = factories.make_user(db, is_admin=True)
    project = factories.make_project(db, db.get(User, admin.id))
    read = _token(db, admin, ["read"])
    write = _token(db, admin, ["read", "write"])
    failures, walked = [], 0
    for route, marker in _routes(app):
        if marker == "public":
            continue
        path = route.path.replace("{project_id}", str(project.id))
        path = re.sub(r"\{[^}]+\}", "999999", path)
        for method in sorted(route.methods - {"HEAD"}):
            kwargs = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            resp = client.request(method, path, headers=read, follow_redirects=False, **kwargs)
            scoped_out = resp.status_code == 403 and "insufficient_scope" in resp.text
            writes = method in UNSAFE_METHODS or getattr(route.endpoint, "writes_db", False)
            if writes:
                walked += 1
                if not scoped_out:
                    failures.append(f"{method} {route.path} with a read token: {resp.status_code}")
            elif scoped_out and marker != "admin":  # admin routes need the admin scope
                failures.append(f"{method} {route.path}: a safe route refused a read token")
            if marker == "admin" and not writes:
                resp = client.request(method, path, headers=write, follow_redirects=False)
                if resp.status_code != 403:
                    failures.append(f"{method} {route.path} (admin) with a read+write token: "
                                    f"{resp.status_code}")
    assert walked >= 20
    assert not failures, "\n".join(failures)


def test_scopes_write_admin_and_no_escalation(client, db, factories):
    from service.models import User

    admin = factories.make_user(db, is_admin=True)
    plain = factories.make_user(db)
    read = _token(db, admin, ["read"])
    assert client.get("/api/v1/me", headers=read).status_code == 200
    assert client.get("/api/v1/users", headers=read).status_code == 403  # admin scope missing
    refused = client.post("/api/v1/tokens", json={"name": "full"}, headers=read)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_scope"
    write = _token(db, admin, ["write"])
    assert client.post("/api/v1/projects", json={"name": "x"}, headers=write).status_code == 201
    assert client.get("/api/v1/projects", headers=write).status_code == 200  # write implies read
    more = client.post("/api/v1/tokens", json={"name": "more", "scopes": ["admin"]}, headers=write)
    assert more.status_code == 403  # never more than the caller's own scopes
    same = client.post("/api/v1/tokens", json={"name": "same"}, headers=write)
    assert same.status_code == 201 and same.json()["scopes"] == ["read", "write"]
    full = _token(db, admin, ["read", "write", "admin"])
    assert client.get("/api/v1/users", headers=full).status_code == 200
    bad = client.post("/api/v1/tokens", json={"name": "x", "scopes": ["root"]}, headers=full)
    assert bad.status_code == 422
    # a non-admin cannot mint an admin-scoped token
    plain_full = _token(db, db.get(User, plain.id), None)
    assert client.post("/api/v1/tokens", json={"name": "a", "scopes": ["admin"]},
                       headers=plain_full).status_code == 403
    # tokens made before scopes were enforced carry ["api"]: full access
    from service.core import security
    from service.models import ApiToken

    secret, prefix, digest = security.new_api_token()
    db.add(ApiToken(user_id=admin.id, name="old", prefix=prefix, token_hash=digest, scopes=["api"]))
    db.commit()
    legacy = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/users", headers=legacy).status_code == 200
    assert client.post("/api/v1/projects", json={"name": "y"}, headers=legacy).status_code == 201


def test_browser_session_has_every_scope(client, db, factories):
    user = factories.make_user(db)
    csrf = factories.browser_login(client, user.email)
    resp = client.post("/api/v1/tokens", json={"name": "from the browser", "scopes": ["read"]},
                       headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 201 and resp.json()["scopes"] == ["read"]


def test_tokens_expire_when_asked(client, db, factories):
    from service.models import ApiToken

    actor = factories.make_actor(db)
    resp = client.post("/api/v1/tokens", json={"name": "ci", "expires_in_days": 7},
                       headers=actor.headers)
    assert resp.status_code == 201 and resp.json()["expires_at"]
    secret = resp.json()["token"]
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    token = db.get(ApiToken, resp.json()["id"])
    token.expires_at = token.expires_at - timedelta(days=8)
    db.commit()
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    assert client.post("/api/v1/tokens", json={"name": "x", "expires_in_days": 0},
                       headers=actor.headers).status_code == 422
