"""Browsers ask every page for an icon: it is there (no 404 in the console of every page)."""
from __future__ import annotations


def test_favicon_is_served_and_declared(client):
    resp = client.get("/favicon.ico", follow_redirects=False)
    assert resp.status_code == 301 and resp.headers["location"] == "/static/favicon.svg"
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.text.startswith("<svg")
    login = client.get("/login")
    assert '<link rel="icon" href="/static/favicon.svg"' in login.text
