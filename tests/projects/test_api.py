from __future__ import annotations


def test_project_crud_and_members(client, db, factories):
    owner = factories.make_actor(db)
    annotator = factories.make_actor(db)
    resp = client.post("/api/v1/projects", json={"name": "Med QA", "description": "d"},
                       headers=owner.headers)
    assert resp.status_code == 201
    project = resp.json()
    assert project["my_role"] == "owner"
    from datetime import datetime, timedelta

    assert datetime.fromisoformat(project["created_at"]).utcoffset() == timedelta(0)
    pid = project["id"]

    add = client.post(f"/api/v1/projects/{pid}/members", json={"email": annotator.email},
                      headers=owner.headers)
    assert add.status_code == 201 and add.json()["role"] == "annotator"
    assert client.post(f"/api/v1/projects/{pid}/members", json={"email": annotator.email},
                       headers=owner.headers).status_code == 409
    mine = client.get("/api/v1/projects", headers=annotator.headers).json()
    assert [p["id"] for p in mine["items"]] == [pid] and mine["items"][0]["my_role"] == "annotator"

    assert client.patch(f"/api/v1/projects/{pid}", json={"name": "x"},
                        headers=annotator.headers).status_code == 403
    upd = client.patch(f"/api/v1/projects/{pid}", json={"name": "Med QA 2"}, headers=owner.headers)
    assert upd.json()["name"] == "Med QA 2"

    role = client.patch(f"/api/v1/projects/{pid}/members/{annotator.user_id}", json={"role": "lead"},
                        headers=owner.headers)
    assert role.status_code == 200 and role.json()["role"] == "lead"
    last_owner = client.patch(f"/api/v1/projects/{pid}/members/{owner.user_id}",
                              json={"role": "viewer"}, headers=owner.headers)
    assert last_owner.status_code == 409 and last_owner.json()["error"]["code"] == "last_owner"

    assert client.delete(f"/api/v1/projects/{pid}/members/{annotator.user_id}",
                         headers=owner.headers).status_code == 204
    assert client.get(f"/api/v1/projects/{pid}", headers=annotator.headers).status_code == 404
    assert client.delete(f"/api/v1/projects/{pid}", headers=owner.headers).status_code == 204
    assert client.get(f"/api/v1/projects/{pid}", headers=owner.headers).status_code == 404


def test_lead_manages_annotators_but_not_owners(client, db, factories):
    owner = factories.make_actor(db)
    lead = factories.make_actor(db)
    other = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "p"}, headers=owner.headers).json()["id"]
    client.post(f"/api/v1/projects/{pid}/members", json={"email": lead.email, "role": "lead"},
                headers=owner.headers)
    assert client.post(f"/api/v1/projects/{pid}/members", json={"email": other.email, "role": "owner"},
                       headers=lead.headers).status_code == 403
    assert client.post(f"/api/v1/projects/{pid}/members", json={"email": other.email},
                       headers=lead.headers).status_code == 201
    assert client.delete(f"/api/v1/projects/{pid}/members/{owner.user_id}",
                         headers=lead.headers).status_code == 403


def test_non_member_gets_404_not_403(client, db, factories):
    owner = factories.make_actor(db)
    stranger = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "secret"}, headers=owner.headers).json()["id"]
    resp = client.get(f"/api/v1/projects/{pid}", headers=stranger.headers)
    missing = client.get("/api/v1/projects/987654", headers=stranger.headers)
    assert resp.status_code == missing.status_code == 404
    assert resp.json() == missing.json()


def test_add_unknown_email_is_422_with_field(client, db, factories):
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "p"}, headers=owner.headers).json()["id"]
    resp = client.post(f"/api/v1/projects/{pid}/members", json={"email": "ghost@example.com"},
                       headers=owner.headers)
    assert resp.status_code == 422 and resp.json()["error"]["details"][0]["field"] == "body.email"
    bad_role = client.post(f"/api/v1/projects/{pid}/members", json={"email": owner.email, "role": "king"},
                           headers=owner.headers)
    assert bad_role.status_code == 422 and bad_role.json()["error"]["details"][0]["field"] == "body.role"
