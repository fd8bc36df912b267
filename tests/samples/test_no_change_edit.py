"""An edit over REST that changes nothing (the messages the sample already has, in any key order,
the same tags in any order, the same reasoning) writes no revision, keeps the version and
answers 200 with the sample as it is; a stale one is still a conflict, and a real edit after it
is an edit as ever."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from service.models import Sample, SampleRevision

QA = [{"role": "user", "content": "什么是LoRA？"}, {"role": "assistant", "content": "低秩适配。"}]
# the same conversation as a page or a client may send it: keys in another order
QA_REORDERED = [{"content": m["content"], "role": m["role"]} for m in QA]


@pytest.fixture
def sample(db, factories, client):
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "p"}, headers=owner.headers).json()["id"]
    resp = client.post(f"/api/v1/projects/{pid}/samples", headers=owner.headers,
                       json={"messages": QA, "tags": ["b", "a"], "reasoning": "think first"})
    assert resp.status_code == 201, resp.text
    return owner, pid, resp.json()


def _revisions(db, sid: int) -> list[str]:
    db.expire_all()
    return list(db.scalars(select(SampleRevision.action).where(SampleRevision.sample_id == sid)
                           .order_by(SampleRevision.id)))


@pytest.mark.parametrize("body", [
    {"messages": QA},
    {"messages": QA_REORDERED},
    {"messages": QA_REORDERED, "tags": ["a", "b", "a"], "reasoning": "think first"},
    {"tags": ["a", "b"]},
    {"reasoning": "think first", "comment": "looked at it, nothing to change"},
])
def test_an_edit_that_changes_nothing_writes_nothing(client, db, sample, body):
    owner, pid, created = sample
    sid = created["id"]
    url = f"/api/v1/projects/{pid}/samples/{sid}"
    before = db.get(Sample, sid)
    updated_at = before.updated_at
    resp = client.patch(url, json=body, headers={**owner.headers, "If-Match": '"1"'})
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["version"] == 1 and resp.headers["etag"] == '"1"'
    assert got["messages"] == QA and got["tags"] == ["a", "b"]
    assert got["reasoning"] == "think first"
    assert _revisions(db, sid) == ["create"]
    row = db.get(Sample, sid)
    assert row.version == 1 and row.updated_at == updated_at
    hist = client.get(f"{url}/history", headers=owner.headers).json()["items"]
    assert [h["action"] for h in hist] == ["create"]


def test_a_stale_no_change_edit_is_still_a_conflict_and_a_real_edit_still_counts(client, db,
                                                                                 sample):
    owner, pid, created = sample
    sid = created["id"]
    url = f"/api/v1/projects/{pid}/samples/{sid}"
    changed = [QA[0], {"role": "assistant", "content": "Low-Rank Adaptation"}]
    edit = client.patch(url, json={"messages": changed, "version": 1}, headers=owner.headers)
    assert edit.status_code == 200 and edit.json()["version"] == 2
    # the same messages again, from the version it started from: nothing to write
    same = client.patch(url, json={"messages": changed, "version": 2}, headers=owner.headers)
    assert same.status_code == 200 and same.json()["version"] == 2
    # from a version that is gone: a conflict, as any stale write (the client must look again)
    stale = client.patch(url, json={"messages": changed, "version": 1}, headers=owner.headers)
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "version_conflict"
    assert _revisions(db, sid) == ["create", "edit"]
    # a status change is a decision even where nothing else changes: it is recorded
    accept = client.post(f"{url}/status", json={"status": "accepted", "version": 2},
                         headers=owner.headers)
    assert accept.status_code == 200 and accept.json()["version"] == 3
    assert _revisions(db, sid) == ["create", "edit", "status"]
    assert db.scalar(select(func.count()).select_from(SampleRevision)
                     .where(SampleRevision.sample_id == sid)) == 3
