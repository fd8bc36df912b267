from __future__ import annotations

import logging


def test_token_lifecycle_secret_shown_once(client, db, factories, caplog):
    caplog.set_level(logging.DEBUG)
    actor = factories.make_actor(db)
    resp = client.post("/api/v1/tokens", json={"name": "ci"}, headers=actor.headers)
    assert resp.status_code == 201
    created = resp.json()
    secret = created["token"]
    assert secret.startswith("atk_") and created["prefix"] in secret

    listed = client.get("/api/v1/tokens", headers=actor.headers).json()["items"]
    assert {t["name"] for t in listed} == {"test", "ci"}
    assert secret not in client.get("/api/v1/tokens", headers=actor.headers).text

    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200 and me.json()["email"] == actor.email

    revoked = client.delete(f"/api/v1/tokens/{created['id']}", headers=actor.headers)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    refused = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    assert secret not in caplog.text and actor.token not in caplog.text


def test_unknown_and_malformed_tokens_are_refused(client):
    for header in ("Bearer atk_nope_nope", "Bearer garbage", "Basic abc", "Bearer "):
        assert client.get("/api/v1/me", headers={"Authorization": header}).status_code == 401


def test_users_admin_only(client, db, factories):
    admin = factories.make_actor(db, is_admin=True)
    plain = factories.make_actor(db)
    assert client.get("/api/v1/users", headers=plain.headers).status_code == 403
    resp = client.post("/api/v1/users", headers=admin.headers,
                       json={"email": "New@Example.com", "password": "longenough1"})
    assert resp.status_code == 201 and resp.json()["email"] == "new@example.com"
    assert "password" not in resp.text
    dup = client.post("/api/v1/users", headers=admin.headers,
                      json={"email": "new@example.com", "password": "longenough1"})
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "user_exists"
    page = client.get("/api/v1/users?limit=2", headers=admin.headers).json()
    assert len(page["items"]) == 2 and page["next_cursor"]
    rest = client.get(f"/api/v1/users?limit=2&cursor={page['next_cursor']}", headers=admin.headers).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    assert {u["id"] for u in page["items"]}.isdisjoint({u["id"] for u in rest["items"]})


def test_validation_errors_name_the_field(client, db, factories):
    admin = factories.make_actor(db, is_admin=True)
    resp = client.post("/api/v1/users", headers=admin.headers, json={"email": "x@example.com",
                                                                     "password": 123})
    assert resp.status_code == 422
    body = resp.json()["error"]
    assert body["code"] == "validation_error"
    assert any(d["field"] == "body.password" for d in body["details"])
    bad_json = client.post("/api/v1/users", headers={**admin.headers, "Content-Type": "application/json"},
                           content=b"{not json")
    assert bad_json.status_code == 422
    assert client.get("/api/v1/users/999999", headers=admin.headers).status_code == 404
    assert client.get("/api/v1/users?cursor=@@@", headers=admin.headers).status_code == 422


def test_the_rest_api_applies_the_password_policy(client, db, factories):
    """The same policy as the CLI and the invitation page (service/users/passwords.py)."""
    admin = factories.make_actor(db, is_admin=True)
    for weak in ("eight-ch", "password123", "anna@example.com"):
        resp = client.post("/api/v1/users", headers=admin.headers,
                           json={"email": "anna@example.com", "password": weak})
        assert resp.status_code == 422, weak
        assert resp.json()["error"]["code"] == "weak_password"
        assert resp.json()["error"]["details"][0]["field"] == "body.password"
    made = client.post("/api/v1/users", headers=admin.headers,
                       json={"email": "anna@example.com", "password": "a long passphrase"})
    assert made.status_code == 201
    reset = client.patch(f"/api/v1/users/{made.json()['id']}", headers=admin.headers,
                         json={"password": "password123"})
    assert reset.status_code == 422 and reset.json()["error"]["code"] == "weak_password"
