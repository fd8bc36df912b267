"""Database round trips per review request, counted with a SQLAlchemy event listener on the
app's engine and pinned: a claim (``GET .../review/next``), a save (PATCH) and a decision are
on every annotator's hot path (issue 17: 50 annotators on one queue), so a query that creeps
back in fails here.

PostgreSQL, where the shared queue runs: a claim is 3 statements (the token, the project with
the caller's role, and ONE statement that picks, leases and returns the sample), a decision 6
(token, project, the sample, its compare-and-set UPDATE ... RETURNING, the revision, the
decision upsert that also drops the lease). Before issue 17's work they were 6 and 10."""

from __future__ import annotations

from sqlalchemy import func, select

from service.models import ReviewDecision, ReviewLease, Sample
from tests.conftest import PG_URL
from tests.review.conftest import qa, team  # noqa: F401  (fixture)
from tests.support.statements import statements

# (claim, save, decision); SQLite (one writer, no SKIP LOCKED) keeps the portable claim
PINNED = (3, 5, 6) if PG_URL else (6, 5, 7)


def test_claim_save_and_decision_round_trips(client, db, team, make_samples):  # noqa: F811
    ids = make_samples(team.project_id, 5)
    base = f"/api/v1/projects/{team.project_id}"
    client.get(f"{base}/review/next", headers=team.ann2.headers)  # ann2 holds the first one
    # ann1's first request stamps its token's last_used_at (once a minute): not counted
    assert client.get(f"{base}/review/progress", headers=team.ann1.headers).status_code == 200
    with statements() as claim:
        resp = client.get(f"{base}/review/next", headers=team.ann1.headers)
    assert resp.status_code == 200, resp.text
    sample = resp.json()["sample"]
    assert sample["id"] == ids[1]
    assert db.scalar(select(ReviewLease.user_id).where(ReviewLease.sample_id == ids[1])) == (
        team.ann1.user_id
    )
    with statements() as save:
        resp = client.patch(
            f"{base}/samples/{sample['id']}",
            headers={**team.ann1.headers, "If-Match": f'"{sample["version"]}"'},
            json={"messages": qa(50, "An edited answer.")},
        )
    assert resp.status_code == 200, resp.text
    version = resp.json()["version"]
    assert version == sample["version"] + 1
    with statements() as decision:
        resp = client.post(
            f"{base}/review/samples/{sample['id']}/decision",
            headers=team.ann1.headers,
            json={"decision": "accepted", "version": version},
        )
    assert resp.status_code == 200, resp.text
    assert resp.json()["sample"]["status"] == "accepted"
    db.expire_all()
    assert db.get(Sample, sample["id"]).version == version + 1
    assert (
        db.scalar(select(ReviewDecision.decision).where(ReviewDecision.sample_id == sample["id"]))
        == "accepted"
    )
    assert (
        db.scalar(
            select(func.count())
            .select_from(ReviewLease)
            .where(ReviewLease.sample_id == sample["id"])
        )
        == 0
    )
    shown = "\n".join(
        f"{len(s)}: " + " | ".join(q[:70] for q in s) for s in (claim, save, decision)
    )
    assert (len(claim), len(save), len(decision)) == PINNED, shown
    # the decision loads the sample once
    assert sum(q.startswith("SELECT samples.") for q in decision) == 1, shown
