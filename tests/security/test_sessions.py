"""Item 6 (sessions, cookies, secret key) and the session-rotation part of item 9."""
from __future__ import annotations

import re
import warnings

import pytest
from sqlalchemy import select

from service.core.config import Settings, WeakSecretWarning

STRONG = "k" * 40


def _session_count(db, user_id):
    from service.models import WebSession

    db.expire_all()
    return len(db.scalars(select(WebSession).where(WebSession.user_id == user_id)).all())


def test_logout_without_the_form_token_still_ends_the_session(client, db, factories):
    user = factories.make_user(db)
    factories.browser_login(client, user.email)
    assert _session_count(db, user.id) == 1
    resp = client.post("/logout", data={}, follow_redirects=False)
    assert resp.status_code == 303
    assert _session_count(db, user.id) == 0
    assert client.get("/projects", follow_redirects=False).status_code == 303


def test_login_rotates_the_session_id(client, db, factories):
    from service.core import security

    user = factories.make_user(db)
    factories.browser_login(client, user.email)
    first = client.cookies.get("annotune_session")
    factories.browser_login(client, user.email)  # logging in again, with the old cookie sent
    second = client.cookies.get("annotune_session")
    assert first and second and first != second
    from service.models import WebSession

    db.expire_all()
    hashes = set(db.scalars(select(WebSession.id_hash)))
    assert hashes == {security.sha256_hex(second)}


def test_admin_password_reset_revokes_sessions_and_tokens(app, client, db, factories):
    from fastapi.testclient import TestClient

    admin = factories.make_actor(db, is_admin=True)
    victim = factories.make_actor(db)
    with TestClient(app, base_url="http://testserver") as browser:
        factories.browser_login(browser, victim.email)
        assert browser.get("/projects").status_code == 200
        resp = client.patch(f"/api/v1/users/{victim.user_id}", headers=admin.headers,
                            json={"password": "a brand new password"})
        assert resp.status_code == 200
        assert browser.get("/projects", follow_redirects=False).status_code == 303
    assert client.get("/api/v1/me", headers=victim.headers).status_code == 401
    events = client.get("/api/v1/audit-events?event=password.reset", headers=admin.headers).json()
    assert events["items"][0]["details"] == {"changed": ["password"], "sessions": 1, "tokens": 1}


def test_reset_can_keep_tokens_and_removing_admin_revokes(client, db, factories):
    admin = factories.make_actor(db, is_admin=True)
    other = factories.make_actor(db, is_admin=True)
    client.patch(f"/api/v1/users/{other.user_id}", headers=admin.headers,
                 json={"password": "a brand new password", "revoke_tokens": False})
    assert client.get("/api/v1/me", headers=other.headers).status_code == 200
    client.patch(f"/api/v1/users/{other.user_id}", headers=admin.headers, json={"is_admin": False})
    assert client.get("/api/v1/me", headers=other.headers).status_code == 401


def test_own_password_change_keeps_this_session_and_ends_the_others(app, client, db, factories):
    from fastapi.testclient import TestClient

    user = factories.make_user(db)
    csrf = factories.browser_login(client, user.email)
    with TestClient(app, base_url="http://testserver") as other:
        factories.browser_login(other, user.email)
        wrong = client.post("/api/v1/me/password", headers={"X-CSRF-Token": csrf},
                            json={"current_password": "nope", "new_password": "another password"})
        assert wrong.status_code == 403
        resp = client.post("/api/v1/me/password", headers={"X-CSRF-Token": csrf},
                           json={"current_password": factories.PASSWORD,
                                 "new_password": "another password"})
        assert resp.status_code == 200 and resp.json()["sessions_revoked"] == 1
        assert other.get("/projects", follow_redirects=False).status_code == 303
    assert client.get("/projects").status_code == 200


def test_cookies_secure_by_default_in_production(monkeypatch):
    assert Settings(environment="production", secret_key=STRONG).session_cookie_secure is True
    assert Settings(environment="production", secret_key=STRONG,
                    session_cookie_secure=False).session_cookie_secure is False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert Settings(environment="development").session_cookie_secure is False


def test_login_cookie_carries_secure_when_configured(client, db, factories, monkeypatch):
    from service.core.config import get_settings

    monkeypatch.setattr(get_settings(), "session_cookie_secure", True)
    user = factories.make_user(db)
    page = client.get("/login")
    assert "secure" in page.headers["set-cookie"].lower()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    resp = client.post("/login", data={"email": user.email, "password": factories.PASSWORD,
                                       "csrf_token": csrf}, follow_redirects=False)
    assert "secure" in resp.headers["set-cookie"].lower()


@pytest.mark.parametrize("key", ["x", "change-me-development-only", "", "s" * 31])
def test_production_refuses_a_weak_secret_key(key):
    with pytest.raises(ValueError, match="ANNOTUNE_SECRET_KEY"):
        Settings(environment="production", secret_key=key)


def test_development_warns_about_a_weak_secret_key(monkeypatch):
    monkeypatch.delenv("ANNOTUNE_SECRET_KEY", raising=False)
    with pytest.warns(WeakSecretWarning, match="refused in production"):
        Settings(environment="development", secret_key="short")
    with pytest.warns(WeakSecretWarning, match="not set"):
        Settings(environment="development")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Settings(environment="production", secret_key="s" * 32)
