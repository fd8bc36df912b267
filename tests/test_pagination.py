"""One paginator (service/core/pagination.py) behind every list: pages of ``limit`` items that
join up to the whole list in the list's own order, ``next_cursor`` null on the last page, a
foreign cursor refused naming ``query.cursor``."""
from __future__ import annotations

import pytest


@pytest.fixture
def owner_project(db, client):
    from tests.support.factories import make_actor

    owner = make_actor(db)
    db.commit()
    pid = client.post("/api/v1/projects", json={"name": "paged"}, headers=owner.headers).json()["id"]
    return owner, pid


def _all_pages(client, url, headers, limit, **params):
    items, cursor, pages = [], None, 0
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        resp = client.get(url, headers=headers, params=query)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert set(body) >= {"items", "next_cursor"} and len(body["items"]) <= limit
        items += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages


def test_templates_page_in_their_order(client, db, owner_project):
    """A keyset over (the project's own first, name, version, id): the same order as the
    whole list, however small the pages."""
    from service.generation import service as generation_service

    owner, pid = owner_project
    url = f"/api/v1/projects/{pid}/templates"
    for name in ("zeta", "alpha", "alpha"):  # two versions of alpha
        assert client.post(url, headers=owner.headers, json={
            "name": name, "kind": "custom", "text": "{{ text }}"}).status_code == 201
    items, pages = _all_pages(client, url, owner.headers, limit=2)
    expected = [t.id for t in generation_service.list_templates(db, project_id=pid)]
    assert [t["id"] for t in items] == expected and pages == (len(expected) + 1) // 2
    assert [t["name"] for t in items[:3]] == ["alpha", "alpha", "zeta"]  # the project's first
    assert [t["version"] for t in items[:2]] == [1, 2]


def test_small_lists_page_too(client, db, owner_project):
    owner, pid = owner_project
    metrics, pages = _all_pages(client, "/api/v1/eval-metrics", owner.headers, limit=3)
    names = [m["name"] for m in metrics]
    assert names == sorted(names) and len(names) > 3 and pages > 1
    tokens, _ = _all_pages(client, "/api/v1/tokens", owner.headers, limit=1)
    assert [t["name"] for t in tokens] == ["test"]
    members, _ = _all_pages(client, f"/api/v1/projects/{pid}/members", owner.headers, limit=1)
    assert [m["role"] for m in members] == ["owner"]


def test_a_cursor_of_another_list_is_refused(client, db, owner_project):
    owner, pid = owner_project
    first = client.get("/api/v1/eval-metrics", headers=owner.headers, params={"limit": 1}).json()
    for url, cursor in ((f"/api/v1/projects/{pid}/templates", first["next_cursor"]),
                        (f"/api/v1/projects/{pid}/providers", first["next_cursor"]),
                        ("/api/v1/eval-metrics", "bm90IGpzb24")):  # "not json"
        resp = client.get(url, headers=owner.headers, params={"cursor": cursor})
        assert resp.status_code == 422, (url, resp.text)
        assert resp.json()["error"]["details"][0]["field"] == "query.cursor"
    too_many = client.get(f"/api/v1/projects/{pid}/templates", headers=owner.headers,
                          params={"limit": 501})
    assert too_many.status_code == 422
