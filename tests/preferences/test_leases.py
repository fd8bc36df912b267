"""A shared pairwise queue: "next" leases the pair it hands out, so annotators never get the
same pair at once (as single review does for samples, tests/review/test_queue.py). Real
threads over real HTTP for the race."""
from __future__ import annotations

import threading
from datetime import timedelta

import httpx

from tests.preferences.conftest import pair_items

ANNOTATORS = 16
ROUNDS = 3


def _next(client, team, actor):
    item = client.get(f"/api/v1/projects/{team.project_id}/preference-review/next",
                      headers=actor.headers)
    assert item.status_code == 200, item.text
    return item.json()["id"] if item.json() else None


def test_a_pair_lease_keeps_others_off_lapses_and_ends_with_the_decision(client, db, team,
                                                                         make_pairs):
    from service.core.config import get_settings
    from service.models import PreferenceLease

    ids = make_pairs(team.project_id, 2)
    first = _next(client, team, team.ann1)
    assert _next(client, team, team.ann1) == first  # still mine
    second = _next(client, team, team.ann2)
    assert {first, second} == set(ids)
    assert _next(client, team, team.lead) is None  # both pairs are held
    # the page hands out the same leased pair as the API
    page = client.get(f"/projects/{team.project_id}/preferences", headers=team.ann1.headers)
    assert page.status_code == 200 and f'"item_id": {first}' in page.text.replace("&#34;", '"')
    lease = db.get(PreferenceLease, first)
    lease.expires_at = lease.expires_at - timedelta(seconds=get_settings().review_lease_seconds + 1)
    db.commit()
    assert _next(client, team, team.lead) == first  # lapsed: free again
    # a decision drops the decider's lease; the pair, decided, leaves the queue
    item = client.get(f"/api/v1/projects/{team.project_id}/preference-items/{second}",
                      headers=team.lead.headers).json()
    a, b = (c["id"] for c in item["candidates"])
    resp = client.post(f"/api/v1/projects/{team.project_id}/preference-items/{second}/decision",
                       headers=team.ann2.headers,
                       json={"outcome": "preferred", "chosen_id": a, "rejected_id": b})
    assert resp.status_code == 200, resp.text
    db.expire_all()
    assert db.get(PreferenceLease, second) is None
    assert _next(client, team, team.ann2) is None  # the lead holds the other one


def test_concurrent_annotators_get_distinct_pairs(live_server, db, factories):
    from service.models import User

    lead = factories.make_actor(db)
    project = factories.make_project(db, db.get(User, lead.user_id), name="Shared pairs")
    annotators = [factories.make_actor(db) for _ in range(ANNOTATORS)]
    for actor in annotators:
        factories.add_member(db, project, db.get(User, actor.user_id), "annotator")
    pair_items(db, project.id, ANNOTATORS * ROUNDS + 8)
    base = f"{live_server.url}/api/v1/projects/{project.id}"
    handed: list[tuple[int, int]] = []  # (round, item)
    codes: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(ANNOTATORS)

    def annotate(actor) -> None:
        with httpx.Client(headers=actor.headers, timeout=120) as c:
            for n in range(ROUNDS):
                barrier.wait()  # everyone asks at the same moment
                got = c.get(f"{base}/preference-review/next")
                assert got.status_code == 200, got.text
                item = got.json()
                assert item is not None
                with lock:
                    handed.append((n, item["id"]))
                barrier.wait()  # everyone holds a pair before anyone decides
                a, b = (cand["id"] for cand in item["candidates"][:2])
                resp = c.post(f"{base}/preference-items/{item['id']}/decision",
                              json={"outcome": "preferred", "chosen_id": a, "rejected_id": b})
                with lock:
                    codes.append(resp.status_code)

    threads = [threading.Thread(target=annotate, args=(a,)) for a in annotators]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * (ANNOTATORS * ROUNDS), codes
    for n in range(ROUNDS):  # at any moment, every annotator holds a different pair
        held = [i for r, i in handed if r == n]
        assert len(held) == len(set(held)) == ANNOTATORS, held
    items = [i for _, i in handed]
    assert len(items) == len(set(items))  # overlap 1: no pair was decided twice
