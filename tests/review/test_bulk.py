"""Bulk changes and assignment: in the request below the threshold, as a job above it
(batches in their own transactions, version-checked, same history), with a status endpoint."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from service.models import Sample, SampleRevision
from service.review import bulk as review_bulk
from tests.conftest import PG_URL
from tests.support import worker as w
from workers.review import runner as review_runner


def url(t, path: str) -> str:
    return f"/api/v1/projects/{t.project_id}{path}"


def _revisions(db, ids):
    db.expire_all()
    rows = db.scalars(select(SampleRevision).where(SampleRevision.sample_id.in_(ids),
                                                   SampleRevision.action == "bulk")
                      .order_by(SampleRevision.sample_id)).all()
    return [(r.version, r.action, r.status_before, r.status_after, r.messages_before == r.messages_after,
             r.actor_id, r.comment) for r in rows]


def _state(db, ids):
    db.expire_all()
    rows = {s.id: s for s in db.scalars(select(Sample).where(Sample.id.in_(ids)))}
    return [(rows[i].status, rows[i].tags, rows[i].assignee_id, rows[i].version,
             rows[i].reviewed_by_id) for i in ids]


@pytest.fixture
def low_threshold(monkeypatch):
    monkeypatch.setattr(review_bulk, "TASK_THRESHOLD", 4)
    monkeypatch.setattr(review_bulk, "BATCH", 2)


BODY = {"filter": {"status": ["pending"]}, "status": "accepted", "add_tags": ["checked"],
        "remove_tags": ["draft"]}


def test_small_bulk_stays_in_the_request(client, db, team, make_samples, low_threshold):
    ids = make_samples(team.project_id, 4, tags=["draft"])
    resp = client.post(url(team, "/samples-bulk"), headers=team.lead.headers, json=BODY)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"matching": 4, "changed": 4, "unchanged": 0, "skipped": 0,
                           "dry_run": False}
    assert [s[:2] for s in _state(db, ids)] == [("accepted", ["checked"])] * 4


def test_large_bulk_runs_as_job_with_the_same_history(client, db, team, make_samples, low_threshold):
    small = make_samples(team.project_id, 4, tags=["draft"])
    assert client.post(url(team, "/samples-bulk"), headers=team.lead.headers, json=BODY).status_code == 200
    big = make_samples(team.project_id, 7, tags=["draft"])
    dry = client.post(url(team, "/samples-bulk"), headers=team.lead.headers, json={**BODY, "dry_run": True})
    assert dry.status_code == 200 and dry.json()["matching"] == 7  # a dry run never starts a job
    resp = client.post(url(team, "/samples-bulk"), headers=team.lead.headers, json=BODY)
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert job["matching"] == 7 and job["status_url"].endswith(job["job_id"])
    # eager in tests: the task ran after the commit, in batches of 2
    status = client.get(job["status_url"], headers=team.lead.headers).json()
    assert status["status"] == "succeeded" and status["done"]
    assert (status["processed"], status["changed"], status["unchanged"], status["skipped"]) == (7, 7, 0, 0)
    # the same sample state and the same revisions as the in-request path
    assert _state(db, big) == [_state(db, small)[0]] * 7
    assert _revisions(db, big) == [_revisions(db, small)[0]] * 7
    assert _revisions(db, small)[0] == (2, "bulk", "pending", "accepted", True, team.lead.user_id, None)
    # nothing left to do: a second run changes nothing
    again = client.post(url(team, "/samples-bulk"), headers=team.lead.headers,
                        json={**BODY, "filter": {"ids": big}})
    assert again.status_code == 202
    assert client.get(again.json()["status_url"], headers=team.lead.headers).json()["unchanged"] == 7


def _racing_apply(team, victim: int):
    """``apply_bulk`` as if another user edited sample ``victim`` (their own transaction, committed)
    between the bulk change's read and its write."""
    from service.core.db import get_sessionmaker
    from service.samples import service as samples_service

    real_apply = samples_service.apply_bulk

    def racing_apply(session, row, values, actor_id):
        if row.id == victim:
            with get_sessionmaker()() as other:
                samples_service.update_sample(other, project_id=team.project_id, sample_id=row.id,
                                              expected_version=row.version, actor_id=team.ann1.user_id,
                                              tags=["theirs"])
                other.commit()
        return real_apply(session, row, values, actor_id)

    return racing_apply


def test_in_request_bulk_skips_samples_changed_meanwhile(client, db, team, make_samples, monkeypatch):
    """The small, in-request path has the same compare-and-set: the other edit stands."""
    from service.samples import service as samples_service

    if db.get_bind().dialect.name == "sqlite":
        pytest.skip("SQLite has one writer: another edit cannot land inside the request's write")

    ids = make_samples(team.project_id, 3, tags=["draft"])
    monkeypatch.setattr(samples_service, "apply_bulk", _racing_apply(team, ids[1]))
    resp = client.post(url(team, "/samples-bulk"), headers=team.lead.headers, json=BODY)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["changed"], resp.json()["skipped"]) == (2, 1)
    state = _state(db, ids)
    assert state[1][:2] == ("pending", ["theirs"])
    assert state[0][:2] == state[2][:2] == ("accepted", ["checked"])


@pytest.mark.skipif(not PG_URL, reason="SQLite serialises writers (BEGIN IMMEDIATE): no edit can "
                    "land between a batch's read and its write there")
def test_job_skips_samples_changed_meanwhile(client, db, team, make_samples, low_threshold, monkeypatch):
    """A sample edited between the task's read and its write keeps the edit; it is counted."""
    from service.core import jobs
    from service.samples import service as samples_service

    ids = make_samples(team.project_id, 6, tags=["draft"])
    sent = []
    monkeypatch.setattr(jobs, "send_now", lambda name, **kw: sent.append((name, kw)))
    resp = client.post(url(team, "/samples-bulk"), headers=team.lead.headers, json=BODY)
    assert resp.status_code == 202 and sent == [("review.bulk", {"job_id": resp.json()["job_id"]})]
    assert client.get(resp.json()["status_url"], headers=team.lead.headers).json()["status"] == "queued"

    monkeypatch.setattr(samples_service, "apply_bulk", _racing_apply(team, ids[2]))
    result = review_runner.run_job(resp.json()["job_id"])
    assert (result["changed"], result["skipped"], result["processed"]) == (5, 1, 6)
    state = _state(db, ids)
    assert state[2][:2] == ("pending", ["theirs"])  # their edit stands
    assert all(s[:2] == ("accepted", ["checked"]) for k, s in enumerate(state) if k != 2)
    assert len(_revisions(db, ids)) == 5
    # a redelivered task is a no-op
    assert review_runner.run_job(resp.json()["job_id"]) == {"status": "skipped"}
    assert client.get(resp.json()["status_url"], headers=team.lead.headers).json()["changed"] == 5


def test_large_assignment_runs_as_job(client, db, team, make_samples, low_threshold):
    ids = make_samples(team.project_id, 9)
    a, b = team.ann1.user_id, team.ann2.user_id
    body = {"filter": {"status": ["pending"]}, "annotator_ids": [a, b]}
    dry = client.post(url(team, "/review/assign"), headers=team.lead.headers, json={**body, "dry_run": True})
    resp = client.post(url(team, "/review/assign"), headers=team.lead.headers, json=body)
    assert resp.status_code == 202, resp.text
    assert resp.json()["per_annotator"] == dry.json()["per_annotator"] == {str(a): 5, str(b): 4}
    status = client.get(resp.json()["status_url"], headers=team.lead.headers).json()
    assert status["status"] == "succeeded" and status["changed"] == 9
    assert [s[2] for s in _state(db, ids)] == [a, b] * 4 + [a]
    # count mode with a cap: 3 each, contiguous blocks, the rest untouched (6 > threshold 4)
    resp = client.post(url(team, "/review/assign"), headers=team.lead.headers,
                       json={**body, "annotator_ids": [b, a], "mode": "count", "count": 3})
    assert resp.status_code == 202 and resp.json()["per_annotator"] == {str(b): 3, str(a): 3}
    status = client.get(resp.json()["status_url"], headers=team.lead.headers).json()
    assert (status["processed"], status["changed"], status["unchanged"]) == (6, 4, 2)
    assert [s[2] for s in _state(db, ids)] == [b, b, b, a, a, a, a, b, a]
    assert len(_revisions(db, ids)) == 9 + 4


def test_job_status_access_and_unknown_jobs(client, db, team, make_samples, low_threshold, factories):
    make_samples(team.project_id, 5)
    resp = client.post(url(team, "/samples-bulk"), headers=team.lead.headers,
                       json={"filter": {}, "add_tags": ["x"]})
    job_url = resp.json()["status_url"]
    assert client.get(job_url, headers=team.ann1.headers).status_code == 403
    missing = client.get(url(team, "/review/jobs/0123456789abcdef"), headers=team.lead.headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "job_not_found"
    assert client.get(url(team, "/review/jobs/..%2F..%2Fetc"), headers=team.lead.headers).status_code == 404
    # another project's lead cannot read this project's job through their own project
    from service.models import User

    other = factories.make_actor(db)
    project = factories.make_project(db, db.get(User, other.user_id), name="other")
    foreign = client.get(f"/api/v1/projects/{project.id}/review/jobs/{resp.json()['job_id']}",
                         headers=other.headers)
    assert foreign.status_code == 404


@pytest.mark.worker
@pytest.mark.skipif(not w.redis_available(), reason="no Redis")
def test_bulk_job_through_real_worker(client, db, team, make_samples, low_threshold, monkeypatch, tmp_path):
    if db.get_bind().dialect.name != "postgresql":
        pytest.skip("worker tests run on PostgreSQL")
    from service.core import jobs

    # the API process sends review.* to the real worker; progress is read from the database
    w.route_to_worker(monkeypatch, "review.")
    assert jobs.queue_for("review.bulk") == "ingest"
    ids = make_samples(team.project_id, 11, tags=["draft"])
    w.purge()
    with w.running_worker("ingest", name="review-bulk", log_path=tmp_path / "w.log"):
        resp = client.post(url(team, "/samples-bulk"), headers=team.lead.headers, json=BODY)
        assert resp.status_code == 202, resp.text
        deadline, status = time.time() + 60, {}
        while time.time() < deadline:
            status = client.get(resp.json()["status_url"], headers=team.lead.headers).json()
            if status["done"]:
                break
            time.sleep(0.3)
        a = team.ann1.user_id
        assign = client.post(url(team, "/review/assign"), headers=team.lead.headers,
                             json={"filter": {"ids": ids}, "annotator_ids": [a]})
        assert assign.status_code == 202
        while time.time() < deadline:
            done = client.get(assign.json()["status_url"], headers=team.lead.headers).json()
            if done["done"]:
                break
            time.sleep(0.3)
    log = (tmp_path / "w.log").read_text(errors="replace")[-3000:]
    assert status["status"] == "succeeded", (status, log)
    assert (status["processed"], status["changed"], status["skipped"]) == (11, 11, 0)
    assert done["status"] == "succeeded" and done["changed"] == 11, (done, log)
    assert [s[:3] for s in _state(db, ids)] == [("accepted", ["checked"], a)] * 11
    assert len(_revisions(db, ids)) == 22
