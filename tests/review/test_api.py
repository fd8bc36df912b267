"""Review REST: the queue, decisions (single and double review), adjudication, assignment,
agreement, throughput, settings, and who may do what."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from service.models import ReviewDecision, Sample
from tests.review.conftest import qa


def url(t, path: str) -> str:
    return f"/api/v1/projects/{t.project_id}{path}"


def nxt(client, t, actor, cookies=None):
    resp = client.get(url(t, "/review/next"), headers=actor.headers)
    assert resp.status_code == 200, resp.text
    s = resp.json()["sample"]
    return s["id"] if s else None


def test_queue_assigned_first_then_unassigned_skip_comes_back_last(client, db, team, make_samples):
    ids = make_samples(team.project_id, 5)
    db.execute(Sample.__table__.update().where(Sample.id == ids[3]).values(assignee_id=team.ann1.user_id))
    db.execute(Sample.__table__.update().where(Sample.id == ids[0]).values(assignee_id=team.ann2.user_id))
    db.commit()
    assert nxt(client, team, team.ann1) == ids[3]       # mine first
    assert nxt(client, team, team.ann2) == ids[0]
    # skipping keeps a per-session list in a cookie; skipped ones come back only at the end
    r = client.post(url(team, f"/review/samples/{ids[3]}/skip"), headers=team.ann1.headers)
    assert r.status_code == 200 and r.json()["next"]["id"] == ids[1]
    assert nxt(client, team, team.ann1) == ids[1]       # then unassigned; never ann2's
    for sid in (ids[1], ids[2], ids[4]):
        client.post(url(team, f"/review/samples/{sid}/skip"), headers=team.ann1.headers)
    assert nxt(client, team, team.ann1) == ids[3]       # all skipped: they come back
    client.cookies.clear()
    assert nxt(client, team, team.ann1) == ids[3]


def test_single_review_decisions_and_conflict(client, db, team, make_samples):
    sid, sid2 = make_samples(team.project_id, 2)
    edited = qa(1, "A better answer.")
    r = client.post(url(team, f"/review/samples/{sid}/decision"), headers=team.ann1.headers,
                    json={"decision": "accepted", "version": 1, "messages": edited})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resolved"] and body["sample"]["status"] == "accepted"
    assert body["sample"]["messages"][2]["content"] == "A better answer." and body["sample"]["version"] == 2
    # a stale decision is refused with the current version, never applied
    stale = client.post(url(team, f"/review/samples/{sid}/decision"), headers=team.ann2.headers,
                        json={"decision": "rejected", "version": 1, "reason": "bad"})
    assert stale.status_code == 409
    assert stale.json()["error"]["current"]["version"] == 2
    no_reason = client.post(url(team, f"/review/samples/{sid2}/decision"), headers=team.ann1.headers,
                            json={"decision": "rejected", "version": 1})
    assert no_reason.status_code == 422
    ok = client.post(url(team, f"/review/samples/{sid2}/decision"), headers=team.ann1.headers,
                     json={"decision": "rejected", "version": 1, "reason": "off-topic: about cats"})
    assert ok.json()["sample"]["reject_reason"] == "off-topic: about cats"
    rows = db.scalars(select(ReviewDecision).order_by(ReviewDecision.id)).all()
    assert [(r.sample_id, r.decision) for r in rows] == [(sid, "accepted"), (sid2, "rejected")]
    hist = client.get(url(team, f"/samples/{sid}/history"), headers=team.viewer.headers).json()["items"]
    assert [h["action"] for h in hist] == ["create", "edit"] and hist[1]["status_after"] == "accepted"


def test_double_review_agree_disagree_and_adjudicate(client, db, team, make_samples):
    client.put(url(team, "/review/settings"), headers=team.lead.headers, json={"review_overlap": 2})
    s1, s2, s3 = make_samples(team.project_id, 3)

    def decide(actor, sid, decision, version=1, **extra):
        r = client.post(url(team, f"/review/samples/{sid}/decision"), headers=actor.headers,
                        json={"decision": decision, "version": version, **extra})
        assert r.status_code == 200, r.text
        return r.json()

    first = decide(team.ann1, s1, "accepted")
    assert not first["resolved"] and first["sample"]["status"] == "pending" and first["decisions"] == 1
    assert nxt(client, team, team.ann1) == s2          # I decided s1 already
    assert nxt(client, team, team.ann2) == s1
    agreed = decide(team.ann2, s1, "accepted")
    assert agreed["resolved"] and agreed["sample"]["status"] == "accepted"

    decide(team.ann1, s2, "accepted")
    split = decide(team.ann2, s2, "rejected", reason="wrong")
    assert split["flagged"] and not split["resolved"]
    assert "needs-adjudication" in split["sample"]["tags"] and split["sample"]["status"] == "pending"
    assert nxt(client, team, team.lead) == s3          # flagged ones leave the queue

    # same label but different edits: also a disagreement (never drop an edit silently)
    decide(team.ann1, s3, "accepted", messages=qa(3, "edit one"))
    assert decide(team.ann2, s3, "accepted", messages=qa(3, "edit two"))["flagged"]

    # reviewers can't see each other's decisions or adjudicate; the lead can
    assert client.get(url(team, f"/review/samples/{s2}/decisions"), headers=team.ann1.headers).status_code == 403
    decisions = client.get(url(team, f"/review/samples/{s2}/decisions"), headers=team.lead.headers).json()["items"]
    assert {d["decision"] for d in decisions} == {"accepted", "rejected"}
    version = split["sample"]["version"]
    denied = client.post(url(team, f"/review/samples/{s2}/adjudicate"), headers=team.ann1.headers,
                         json={"decision": "accepted", "version": version})
    assert denied.status_code == 403
    final = client.post(url(team, f"/review/samples/{s2}/adjudicate"), headers=team.lead.headers,
                        json={"decision": "rejected", "version": version, "reason": "wrong"})
    assert final.status_code == 200, final.text
    assert final.json()["sample"]["status"] == "rejected"
    assert "needs-adjudication" not in final.json()["sample"]["tags"]

    agreement = client.get(url(team, "/review/agreement"), headers=team.viewer.headers).json()
    # pairs (ann1, ann2): s1 acc/acc, s2 acc/rej, s3 acc/acc -> po 2/3; A all acc -> pe = 1*(2/3) = 2/3 -> kappa 0
    assert agreement["items"] == 3 and agreement["raters"] == 2
    pair = agreement["pairs"][0]
    assert pair["items"] == 3 and pair["agreement"] == pytest.approx(2 / 3)
    assert pair["cohen_kappa"] == pytest.approx(0.0)
    assert pair["edit_distance"] > 0  # s3's answers differ
    throughput = client.get(url(team, "/review/throughput"), headers=team.viewer.headers).json()
    assert {r["reviewer_id"]: r["total"] for r in throughput["reviewers"]} == {team.ann1.user_id: 3, team.ann2.user_id: 3}


def test_assign_round_robin_and_count(client, db, team, make_samples):
    ids = make_samples(team.project_id, 7)
    body = {"filter": {"status": ["pending"]}, "annotator_ids": [team.ann1.user_id, team.ann2.user_id]}
    dry = client.post(url(team, "/review/assign"), headers=team.lead.headers, json={**body, "dry_run": True})
    assert dry.json() == {"matching": 7, "per_annotator": {str(team.ann1.user_id): 4, str(team.ann2.user_id): 3},
                          "changed": 0, "dry_run": True}
    assert db.scalar(select(Sample.assignee_id).where(Sample.id == ids[0])) is None
    done = client.post(url(team, "/review/assign"), headers=team.lead.headers, json=body).json()
    assert done["changed"] == 7
    db.expire_all()
    got = dict(db.execute(select(Sample.id, Sample.assignee_id)).all())
    assert [got[i] for i in ids] == [team.ann1.user_id, team.ann2.user_id] * 3 + [team.ann1.user_id]
    by_count = client.post(url(team, "/review/assign"), headers=team.lead.headers,
                           json={**body, "mode": "count", "count": 2}).json()
    assert by_count["per_annotator"] == {str(team.ann1.user_id): 2, str(team.ann2.user_id): 2}
    db.expire_all()
    got = dict(db.execute(select(Sample.id, Sample.assignee_id)).all())
    assert [got[i] for i in ids[:4]] == [team.ann1.user_id] * 2 + [team.ann2.user_id] * 2
    # annotators can't assign; only members can be assigned
    assert client.post(url(team, "/review/assign"), headers=team.ann1.headers, json=body).status_code == 403
    bad = client.post(url(team, "/review/assign"), headers=team.lead.headers,
                      json={**body, "annotator_ids": [team.viewer.user_id]})
    assert bad.status_code == 422


def test_settings_and_roles(client, team, make_samples):
    (sid,) = make_samples(team.project_id, 1)
    got = client.get(url(team, "/review/settings"), headers=team.viewer.headers).json()
    assert got["review_overlap"] == 1 and "off-topic" in got["reject_reasons"]
    assert client.put(url(team, "/review/settings"), headers=team.ann1.headers,
                      json={"target_accepted": 10}).status_code == 403
    put = client.put(url(team, "/review/settings"), headers=team.lead.headers,
                     json={"target_accepted": 10, "reject_reasons": ["wrong", " ", "wrong", "rude"]})
    assert put.json() == {"reject_reasons": ["wrong", "rude"], "target_accepted": 10, "review_overlap": 1}
    # viewers read only
    assert client.post(url(team, f"/review/samples/{sid}/decision"), headers=team.viewer.headers,
                       json={"decision": "accepted", "version": 1}).status_code == 403
    assert client.get(url(team, "/review/next"), headers=team.viewer.headers).status_code == 403
    assert client.get(url(team, "/review/progress"), headers=team.viewer.headers).json()["target_accepted"] == 10
