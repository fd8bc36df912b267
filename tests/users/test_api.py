"""REST: admins create links (shown once); anyone holding a link sets the password with it."""
from __future__ import annotations


def test_invite_over_rest_then_accept_and_log_in(client, db, factories):
    admin = factories.make_actor(db, is_admin=True)
    resp = client.post("/api/v1/invitations", headers=admin.headers,
                       json={"email": "rest@example.com", "name": "Rest"})
    assert resp.status_code == 201, resp.text
    link = resp.json()["link"]
    assert link.startswith("http://testserver/invite/")
    listed = client.get("/api/v1/invitations", headers=admin.headers).json()["items"]
    assert [i["email"] for i in listed] == ["rest@example.com"] and "link" not in listed[0]
    token = link.rsplit("/", 1)[1]
    weak = client.post(f"/api/v1/invitations/{token}/accept", json={"password": "123"})
    assert weak.status_code == 422 and weak.json()["error"]["code"] == "weak_password"
    ok = client.post(f"/api/v1/invitations/{token}/accept", json={"password": "rest passphrase 1"})
    assert ok.status_code == 200 and ok.json()["email"] == "rest@example.com"
    again = client.post(f"/api/v1/invitations/{token}/accept", json={"password": "rest passphrase 1"})
    assert again.status_code == 404
    factories.browser_login(client, "rest@example.com", "rest passphrase 1")


def test_only_admins_invite(client, db, factories):
    user = factories.make_actor(db)
    assert client.post("/api/v1/invitations", headers=user.headers,
                       json={"email": "no@example.com"}).status_code == 403
