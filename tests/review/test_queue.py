"""A shared review queue without assignment: concurrent annotators asking "next" get different
samples (leases), so decisions are on distinct samples and almost never conflict (issue 17
item 4). Real threads over real HTTP."""
from __future__ import annotations

import threading
from datetime import timedelta

import httpx

from tests.review.conftest import qa

ANNOTATORS = 50
ROUNDS = 4


def test_fifty_annotators_get_distinct_samples(live_server, db, factories):
    from service.models import User
    from service.samples import service as samples_service

    lead = factories.make_actor(db)
    project = factories.make_project(db, db.get(User, lead.user_id), name="Shared queue")
    annotators = [factories.make_actor(db) for _ in range(ANNOTATORS)]
    for actor in annotators:
        factories.add_member(db, project, db.get(User, actor.user_id), "annotator")
    for i in range(ANNOTATORS * ROUNDS + 50):
        samples_service.create_sample(db, project_id=project.id, messages=qa(i))
    db.commit()
    base = f"{live_server.url}/api/v1/projects/{project.id}/review"
    decided: list[int] = []
    codes: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(ANNOTATORS)

    def annotate(actor) -> None:
        with httpx.Client(headers=actor.headers, timeout=120) as c:
            barrier.wait()
            for _ in range(ROUNDS):
                got = c.get(f"{base}/next")
                assert got.status_code == 200, got.text
                sample = got.json()["sample"]
                if sample is None:
                    return
                resp = c.post(f"{base}/samples/{sample['id']}/decision",
                              json={"decision": "accepted", "version": sample["version"]})
                with lock:
                    codes.append(resp.status_code)
                    if resp.status_code == 200:
                        decided.append(sample["id"])

    threads = [threading.Thread(target=annotate, args=(a,)) for a in annotators]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(codes) == ANNOTATORS * ROUNDS
    assert set(codes) <= {200, 409}, set(codes)
    conflicts = codes.count(409)
    assert conflicts / len(codes) < 0.01, conflicts
    assert len(set(decided)) == len(decided) == codes.count(200)


def test_a_lease_keeps_others_off_and_lapses(client, db, team, make_samples, monkeypatch):
    from service.core.config import get_settings
    from service.models import ReviewLease

    ids = make_samples(team.project_id, 2)
    url = f"/api/v1/projects/{team.project_id}/review/next"
    first = client.get(url, headers=team.ann1.headers).json()["sample"]["id"]
    assert client.get(url, headers=team.ann1.headers).json()["sample"]["id"] == first  # still mine
    second = client.get(url, headers=team.ann2.headers).json()["sample"]["id"]
    assert {first, second} == set(ids)
    # a third annotator finds nothing free until a lease lapses
    assert client.get(url, headers=team.lead.headers).json()["sample"] is None
    lease = db.get(ReviewLease, first)
    lease.expires_at = lease.expires_at - timedelta(seconds=get_settings().review_lease_seconds + 1)
    db.commit()
    assert client.get(url, headers=team.lead.headers).json()["sample"]["id"] == first
    # skipping hands the lease back
    skip = client.post(f"/api/v1/projects/{team.project_id}/review/samples/{second}/skip",
                       headers=team.ann2.headers)
    assert skip.status_code == 200, skip.text
    db.expire_all()
    assert db.get(ReviewLease, second) is None or db.get(ReviewLease, second).user_id != team.ann2.user_id
