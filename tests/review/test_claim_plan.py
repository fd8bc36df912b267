"""The shared queue's claim on PostgreSQL reads the queue's index, not every decided sample.

Annotators decide the queue from its head, so the decided samples pile up just before the first
pending one. Written with ``status = 'pending'``, PostgreSQL took the primary key for the id order
and stepped over every decided sample on each claim (10k rows, 10-15 ms, after 10k decisions at
1M samples: the database's CPU per decision in bench/review_queue.py went from 15 ms to 6 ms once
fixed). This builds a project whose first 4,000 samples are decided and checks the executed plan
of the claim: both picks (assigned, then unassigned) scan the (project_id, status, id) index and
look at a handful of rows, and the claim hands out the first pending sample."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from service.core.db import utcnow
from service.review import service as review_service
from tests.conftest import PG_URL
from tests.review.conftest import team  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(not PG_URL, reason="the claim statement is PostgreSQL's")

DECIDED, PENDING = 4000, 500


def _scans(plan: dict) -> list[dict]:
    found = [plan] if plan.get("Relation Name") == "samples" else []
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


@pytest.mark.parametrize("sort", ["id", "-id"])
def test_claim_scans_the_queue_index_past_a_long_decided_head(db, team, make_samples,  # noqa: F811
                                                              sort):
    ids = make_samples(team.project_id, 1)
    # copies of the one sample: the decided ones are the queue's head (the oldest for "id",
    # the newest for "-id"), the pending ones after them
    decided = "g <= :decided" if sort == "id" else "g > :pending"
    db.execute(text(
        "INSERT INTO samples (project_id, messages, reasoning, status, version, content_hash, "
        "source, provenance, tags, scores, search_text, created_at, updated_at) "
        f"SELECT project_id, messages, reasoning, CASE WHEN {decided} THEN 'accepted' "
        "ELSE 'pending' END, version, md5(g::text) || md5(g::text), source, provenance, tags, "
        "scores, search_text, created_at, updated_at FROM samples, generate_series(1, :n) g "
        "WHERE samples.id = :id"),
        {"decided": DECIDED, "pending": PENDING, "n": DECIDED + PENDING, "id": ids[0]})
    db.execute(text("UPDATE samples SET status = 'accepted' WHERE id = :id"), {"id": ids[0]})
    db.commit()
    # VACUUM, not only ANALYZE: the tests before this one in the process deleted their samples
    # (conftest DELETEs, ids restart at 1), and their dead entries under this project's id would
    # be read by the scan until vacuumed (971 blocks once, after the search page tests)
    with db.get_bind().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) samples"))
    now = utcnow()
    params = {"project_id": team.project_id, "user_id": team.ann1.user_id, "now": now,
              "expires_at": now + timedelta(minutes=5)}
    stmt = review_service._claim_statement(sort, False)
    compiled = stmt.compile(dialect=db.get_bind().dialect)
    sql = str(compiled)
    bound = {**compiled.params, **params}
    explain = db.connection().exec_driver_sql(
        f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", bound).scalar()
    db.rollback()  # the EXPLAIN ANALYZE took a lease: not kept
    scans = _scans(explain[0]["Plan"])
    assert len(scans) >= 2, scans  # the two picks (and the final join back to the sample)
    picks = [s for s in scans if s.get("Index Name") != "pk_samples"
             or "Rows Removed by Filter" in s]
    assert len(picks) == 2, scans
    queue_indexes = {"ix_samples_project_id_status_id",  # id order, the unassigned pick
                     "ix_samples_project_id_assignee_id_status"}  # the caller's own (none here)
    for scan in picks:
        assert scan["Index Name"] in queue_indexes, scan
        assert scan.get("Rows Removed by Filter", 0) < 10, scan
        assert scan["Actual Rows"] <= 1, scan
        assert scan["Shared Hit Blocks"] + scan["Shared Read Blocks"] < 100, scan
    # (stepping over the 4,000 decided samples reads some 150 blocks)
    assert "ix_samples_project_id_status_id" in {s["Index Name"] for s in picks}
    pending = db.execute(text(
        "SELECT min(id), max(id) FROM samples WHERE project_id = :p AND status = 'pending'"),
        {"p": team.project_id}).one()
    claimed = review_service.next_sample(db, project_id=team.project_id,
                                         user_id=team.ann1.user_id, sort=sort)
    db.commit()
    assert claimed is not None
    assert claimed.id == (pending[0] if sort == "id" else pending[1])
