from __future__ import annotations

import re


def test_login_sets_httponly_lax_cookie_and_logout_ends_session(client, db, factories):
    user = factories.make_user(db)
    page = client.get("/login")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    resp = client.post("/login", data={"email": user.email, "password": factories.PASSWORD,
                                       "csrf_token": csrf}, follow_redirects=False)
    assert resp.status_code == 303
    cookie = resp.headers["set-cookie"]
    assert "annotune_session=" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    projects = client.get("/projects")
    assert projects.status_code == 200 and user.email in projects.text
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', projects.text).group(1)
    client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    after = client.get("/projects", follow_redirects=False)
    assert after.status_code == 303 and after.headers["location"].startswith("/login")


def test_login_form_without_csrf_is_refused(client, db, factories):
    user = factories.make_user(db)
    client.get("/login")
    resp = client.post("/login", data={"email": user.email, "password": factories.PASSWORD,
                                       "csrf_token": "forged"}, follow_redirects=False)
    assert resp.status_code == 403
    assert "annotune_session" not in resp.headers.get("set-cookie", "")


def test_forms_without_valid_csrf_are_refused(client, db, factories):
    user = factories.make_user(db)
    factories.browser_login(client, user.email)
    no_token = client.post("/projects", data={"name": "x"}, follow_redirects=False)
    assert no_token.status_code == 403
    forged = client.post("/projects", data={"name": "x", "csrf_token": "forged"}, follow_redirects=False)
    assert forged.status_code == 403
    # the cookie session cannot call the JSON API's unsafe methods without the header either
    assert client.post("/api/v1/projects", json={"name": "x"}).status_code == 403
    from sqlalchemy import select

    from service.models import Project

    assert db.scalars(select(Project)).all() == []


def test_login_is_rate_limited(client, db, factories):
    user = factories.make_user(db)
    statuses = []
    for _ in range(7):
        page = client.get("/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        statuses.append(client.post("/login", data={"email": user.email, "password": "wrong",
                                                    "csrf_token": csrf}).status_code)
    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429, 429]
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    # even the right password is refused while limited
    assert client.post("/login", data={"email": user.email, "password": factories.PASSWORD,
                                       "csrf_token": csrf}).status_code == 429


def test_user_text_is_escaped(client, db, factories):
    user = factories.make_user(db)
    csrf = factories.browser_login(client, user.email)
    client.post("/projects", data={"name": "<script>alert(1)</script>{{ 7*7 }}", "csrf_token": csrf})
    page = client.get("/projects").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;{{ 7*7 }}" in page
