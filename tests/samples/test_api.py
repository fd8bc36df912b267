from __future__ import annotations

import io
import json
import threading

import pytest
from sqlalchemy import func, select

from service.models import Sample, SampleRevision

QA = [{"role": "user", "content": "什么是LoRA？"}, {"role": "assistant", "content": "低秩适配。"}]


@pytest.fixture
def setup(db, factories, client):
    owner = factories.make_actor(db)
    annotator = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "p"}, headers=owner.headers).json()["id"]
    client.post(f"/api/v1/projects/{pid}/members", json={"email": annotator.email}, headers=owner.headers)
    return owner, annotator, pid


def test_create_edit_status_history(client, setup):
    owner, annotator, pid = setup
    resp = client.post(f"/api/v1/projects/{pid}/samples", json={"messages": QA, "tags": ["med"]},
                       headers=owner.headers)
    assert resp.status_code == 201, resp.text
    sample = resp.json()
    sid = sample["id"]
    assert sample["version"] == 1 and sample["status"] == "pending"

    no_version = client.patch(f"/api/v1/projects/{pid}/samples/{sid}", json={"tags": ["x"]},
                              headers=annotator.headers)
    assert no_version.status_code == 428
    edited = client.patch(f"/api/v1/projects/{pid}/samples/{sid}",
                          json={"messages": [QA[0], {"role": "assistant", "content": "Low-Rank Adaptation"}]},
                          headers={**annotator.headers, "If-Match": '"1"'})
    assert edited.status_code == 200 and edited.json()["version"] == 2
    assert edited.headers["etag"] == '"2"'
    stale = client.patch(f"/api/v1/projects/{pid}/samples/{sid}", json={"tags": ["y"]},
                         headers={**annotator.headers, "If-Match": '"1"'})
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "version_conflict"
    assert stale.json()["error"]["current"]["version"] == 2
    accepted = client.post(f"/api/v1/projects/{pid}/samples/{sid}/status",
                           json={"status": "rejected", "version": 2, "reason": "off-topic"},
                           headers=annotator.headers)
    assert accepted.json()["status"] == "rejected" and accepted.json()["reject_reason"] == "off-topic"
    hist = client.get(f"/api/v1/projects/{pid}/samples/{sid}/history", headers=owner.headers).json()["items"]
    assert [h["action"] for h in hist] == ["create", "edit", "status"]
    assert hist[1]["messages_before"][1]["content"] == "低秩适配。"
    assert hist[2]["actor_id"] == annotator.user_id and hist[2]["comment"] == "off-topic"


def test_invalid_messages_name_the_problem(client, setup):
    owner, _, pid = setup
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    resp = client.post(f"/api/v1/projects/{pid}/samples", json={"messages": bad}, headers=owner.headers)
    assert resp.status_code == 422
    assert resp.json()["error"]["details"][0]["field"].startswith("body.messages")


def test_viewer_cannot_edit_and_annotator_cannot_bulk(client, db, factories, setup):
    owner, annotator, pid = setup
    viewer = factories.make_actor(db)
    client.post(f"/api/v1/projects/{pid}/members", json={"email": viewer.email, "role": "viewer"},
                headers=owner.headers)
    sid = client.post(f"/api/v1/projects/{pid}/samples", json={"messages": QA},
                      headers=owner.headers).json()["id"]
    assert client.patch(f"/api/v1/projects/{pid}/samples/{sid}", json={"version": 1, "tags": []},
                        headers=viewer.headers).status_code == 403
    assert client.post(f"/api/v1/projects/{pid}/samples-bulk", json={"filter": {}, "status": "accepted"},
                       headers=annotator.headers).status_code == 403


def test_concurrent_updates_exactly_one_wins(db, factories):
    """Two transactions update the same sample from the same version at the same time."""
    from service.core.db import get_sessionmaker
    from service.core.errors import Conflict
    from service.samples import service as svc

    user = factories.make_user(db)
    project = factories.make_project(db, user)
    sample = svc.create_sample(db, project_id=project.id, messages=QA, actor_id=user.id)
    db.commit()
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt(text: str) -> None:
        s = get_sessionmaker()()
        try:
            barrier.wait()
            svc.update_sample(s, project_id=project.id, sample_id=sample.id, expected_version=1,
                              actor_id=user.id, messages=[QA[0], {"role": "assistant", "content": text}])
            s.commit()
            outcomes.append("won:" + text)
        except Conflict:
            s.rollback()
            outcomes.append("409")
        finally:
            s.close()

    threads = [threading.Thread(target=attempt, args=(t,)) for t in ("A", "B")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(o[:3] for o in outcomes) == ["409", "won"]
    winner = next(o for o in outcomes if o.startswith("won"))[4:]
    db.expire_all()
    fresh = db.get(Sample, sample.id)
    assert fresh.version == 2 and fresh.messages[1]["content"] == winner
    revs = db.scalars(select(SampleRevision).where(SampleRevision.sample_id == sample.id)
                      .order_by(SampleRevision.id)).all()
    assert [r.action for r in revs] == ["create", "edit"]
    assert revs[1].messages_after[1]["content"] == winner


def _ten_line_file() -> bytes:
    lines = []
    for i in range(1, 11):
        if i == 3:
            lines.append('{"messages": [{"role": "user", "content": "broken"')
        elif i == 7:
            lines.append(json.dumps({"messages": [{"role": "assistant", "content": "no user"}]}))
        else:
            lines.append(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                  {"role": "assistant", "content": f"a{i}"}]},
                                    ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode()


def test_import_strict_rejects_whole_file_with_line_numbers(client, db, setup):
    owner, _, pid = setup
    resp = client.post(f"/api/v1/projects/{pid}/imports", headers=owner.headers,
                       files={"file": ("data.jsonl", io.BytesIO(_ten_line_file()))},
                       data={"mode": "strict"})
    assert resp.status_code == 202, resp.text
    job = client.get(f"/api/v1/projects/{pid}/imports/{resp.json()['id']}", headers=owner.headers).json()
    assert job["status"] == "rejected"
    assert [r["line"] for r in job["report"]] == [3, 7]
    assert job["report"][0]["code"] == "invalid_json"
    assert db.scalar(select(func.count()).select_from(Sample)) == 0
    assert db.scalar(select(func.count()).select_from(SampleRevision)) == 0


def test_import_skip_imports_eight_and_reports_two(client, db, setup):
    owner, _, pid = setup
    resp = client.post(f"/api/v1/projects/{pid}/imports", headers=owner.headers,
                       files={"file": ("data.jsonl", io.BytesIO(_ten_line_file()))},
                       data={"mode": "skip"})
    job = client.get(f"/api/v1/projects/{pid}/imports/{resp.json()['id']}", headers=owner.headers).json()
    assert job["status"] == "succeeded" and job["imported"] == 8 and job["skipped"] == 2
    assert [r["line"] for r in job["report"]] == [3, 7]
    lines = sorted(db.scalars(select(Sample.import_line)).all())
    assert lines == [1, 2, 4, 5, 6, 8, 9, 10]
    listed = client.get(f"/api/v1/projects/{pid}/samples?import_job_id={job['id']}&limit=5",
                        headers=owner.headers).json()
    assert len(listed["items"]) == 5 and listed["next_cursor"]


def test_import_larger_than_a_batch_commits_once_with_its_counts(client, db, setup):
    """2,500 lines span three write batches: on SQLite too (one writer) nothing waits on the
    import's own open transaction, and the file lands whole."""
    owner, _, pid = setup
    lines = "\n".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                               {"role": "assistant", "content": f"a{i}"}]})
                       for i in range(2500))
    resp = client.post(f"/api/v1/projects/{pid}/imports", headers=owner.headers,
                       files={"file": ("big.jsonl", io.BytesIO(lines.encode()))},
                       data={"mode": "strict"})
    assert resp.status_code == 202, resp.text
    job = client.get(f"/api/v1/projects/{pid}/imports/{resp.json()['id']}",
                     headers=owner.headers).json()
    assert (job["status"], job["imported"], job["lines_read"]) == ("succeeded", 2500, 2500)
    assert db.scalar(select(func.count()).select_from(Sample)) == 2500


def test_import_course_keyword_file_with_mapping(client, db, setup):
    owner, _, pid = setup
    rows = [{"conversation": [
        {"human": "抽取出下文中的关键词：\n目的分析结节性甲状腺肿合并甲状腺微小癌的超声声像图特点 ",
         "assistant": "结节性甲状腺肿;甲状腺微小癌;超声"},
        {"human": "抽取出下文中的关键词：\n大语言模型的低秩适配方法", "assistant": "大语言模型;低秩适配"}]},
        {"conversation": [{"human": "抽取出下文中的关键词：\n量化训练", "assistant": "量化"}]}]
    body = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()
    mapping = {"list_field": "conversation", "user": "human", "assistant": "assistant"}
    resp = client.post(f"/api/v1/projects/{pid}/imports", headers=owner.headers,
                       files={"file": ("keywords_data_train.jsonl", io.BytesIO(body))},
                       data={"mode": "strict", "mapping": json.dumps(mapping)})
    job = client.get(f"/api/v1/projects/{pid}/imports/{resp.json()['id']}", headers=owner.headers).json()
    assert job["status"] == "succeeded" and job["imported"] == 3
    samples = client.get(f"/api/v1/projects/{pid}/samples", headers=owner.headers).json()["items"]
    assert [s["messages"][0]["role"] for s in samples] == ["user"] * 3
    assert samples[0]["messages"][0]["content"].endswith("超声声像图特点")  # stripped
    assert samples[0]["messages"][1] == {"role": "assistant", "content": "结节性甲状腺肿;甲状腺微小癌;超声"}
    assert [s["import_line"] for s in samples] == [1, 1, 2]


def test_import_bad_mapping_and_type_are_422(client, setup):
    owner, _, pid = setup
    r1 = client.post(f"/api/v1/projects/{pid}/imports", headers=owner.headers,
                     files={"file": ("x.txt", io.BytesIO(b"hi"))})
    assert r1.status_code == 422 and r1.json()["error"]["details"][0]["field"] == "file"
    r2 = client.post(f"/api/v1/projects/{pid}/imports", headers=owner.headers,
                     files={"file": ("x.jsonl", io.BytesIO(b"{}"))}, data={"mapping": "{oops"})
    assert r2.status_code == 422 and r2.json()["error"]["details"][0]["field"] == "mapping"


def test_bulk_and_filters_and_stats(client, setup):
    owner, annotator, pid = setup
    for i in range(6):
        client.post(f"/api/v1/projects/{pid}/samples", headers=owner.headers,
                    json={"messages": [{"role": "user", "content": f"question {i}"},
                                       {"role": "assistant", "content": "answer_%"}],
                          "tags": ["even"] if i % 2 == 0 else []})
    dry = client.post(f"/api/v1/projects/{pid}/samples-bulk", headers=owner.headers,
                      json={"filter": {"tag": "even"}, "status": "accepted", "dry_run": True}).json()
    assert dry == {"matching": 3, "changed": 0, "dry_run": True}
    done = client.post(f"/api/v1/projects/{pid}/samples-bulk", headers=owner.headers,
                       json={"filter": {"tag": "even"}, "status": "accepted",
                             "assignee_id": annotator.user_id}).json()
    assert done["changed"] == 3
    acc = client.get(f"/api/v1/projects/{pid}/samples?status=accepted", headers=owner.headers).json()
    assert len(acc["items"]) == 3 and all(s["version"] == 2 for s in acc["items"])
    assert len(client.get(f"/api/v1/projects/{pid}/samples?q=QUESTION 1",
                          headers=owner.headers).json()["items"]) in (0, 1)
    assert len(client.get(f"/api/v1/projects/{pid}/samples?q=question 1",
                          headers=owner.headers).json()["items"]) == 1
    # LIKE wildcards in the search text are literal
    assert len(client.get(f"/api/v1/projects/{pid}/samples?q=r_%",
                          headers=owner.headers).json()["items"]) == 6
    assert len(client.get(f"/api/v1/projects/{pid}/samples?q=x_%",
                          headers=owner.headers).json()["items"]) == 0
    stats = client.get(f"/api/v1/projects/{pid}/sample-stats", headers=owner.headers).json()
    assert stats["status_counts"]["accepted"] == 3 and stats["status_counts"]["pending"] == 3
    assert stats["tokens"]["tokenizer"] and stats["tokens"]["total"]["count"] == 6
