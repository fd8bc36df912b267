"""The per-project status counters (``project_sample_counts``, kept by triggers from migration
0019) equal a ``GROUP BY`` over the samples after every kind of write: create, review decision,
edit, bulk change (in the request and as a job), import, raw SQL (and ``COPY`` on PostgreSQL),
delete, project delete; and the migration fills them in for samples that already exist."""

from __future__ import annotations

import io

import orjson
import pytest
from sqlalchemy import create_engine, func, select, text

from service.core import migrate
from service.models import ProjectSampleCount, Sample
from service.review import bulk as review_bulk
from service.samples import service as samples_service
from service.samples import store
from tests.conftest import PG_URL
from tests.review.conftest import qa, team  # noqa: F401  (fixture)
from tests.test_migrations import _scratch_postgresql


def group_by(db) -> dict[tuple[int, str], int]:
    rows = db.execute(
        select(Sample.project_id, Sample.status, func.count()).group_by(
            Sample.project_id, Sample.status
        )
    ).all()
    return {(p, s): n for p, s, n in rows}


def counters(db) -> dict[tuple[int, str], int]:
    rows = db.execute(
        select(
            ProjectSampleCount.project_id,
            ProjectSampleCount.status,
            func.sum(ProjectSampleCount.n),
        ).group_by(ProjectSampleCount.project_id, ProjectSampleCount.status)
    ).all()
    return {(p, s): int(n) for p, s, n in rows if n}


def check(db, project_id: int) -> dict[str, int]:
    """Counters == GROUP BY for every project, and the page's reader agrees; the counts."""
    db.commit()
    db.expire_all()
    exact = group_by(db)
    assert counters(db) == exact
    mine = samples_service.status_counts(db, project_id=project_id)
    assert {s: n for s, n in mine.items() if n} == {
        s: n for (p, s), n in exact.items() if p == project_id
    }
    return mine


def url(t, path: str) -> str:
    return f"/api/v1/projects/{t.project_id}{path}"


def make(db, project_id: int, n: int, **kwargs) -> list[int]:
    ids = [
        samples_service.create_sample(db, project_id=project_id, messages=qa(i), **kwargs).id
        for i in range(n)
    ]
    db.commit()
    return ids


def version_of(db, sample_id: int) -> int:
    db.expire_all()
    return db.get(Sample, sample_id).version


def test_counters_follow_every_write(client, db, team, factories, monkeypatch):  # noqa: F811
    pid = team.project_id
    from service.models import User

    other = factories.make_project(db, db.get(User, team.owner.user_id), name="Other")
    make(db, other.id, 3)
    # create (ORM inserts, one per sample, and several in one flush)
    ids = make(db, pid, 12)
    assert check(db, pid)["pending"] == 12
    # review decisions over HTTP: accept, reject, needs changes
    for sid, decision in zip(ids[:3], ("accepted", "rejected", "needs_changes"), strict=True):
        resp = client.post(
            url(team, f"/review/samples/{sid}/decision"),
            headers=team.ann1.headers,
            json={"decision": decision, "version": version_of(db, sid), "reason": "off-topic"},
        )
        assert resp.status_code == 200, resp.text
    counts = check(db, pid)
    assert (counts["pending"], counts["accepted"], counts["rejected"]) == (9, 1, 1)
    # edit: messages only (no status change), then a status change over the status route
    resp = client.patch(
        url(team, f"/samples/{ids[3]}"),
        headers={**team.lead.headers, "If-Match": f'"{version_of(db, ids[3])}"'},
        json={"messages": qa(99, "An edited answer.")},
    )
    assert resp.status_code == 200, resp.text
    assert check(db, pid)["pending"] == 9
    resp = client.post(
        url(team, f"/samples/{ids[3]}/status"),
        headers=team.lead.headers,
        json={"status": "accepted", "version": version_of(db, ids[3])},
    )
    assert resp.status_code == 200, resp.text
    assert check(db, pid)["accepted"] == 2
    # bulk in the request, then as a background job in batches
    body = {"filter": {"ids": ids[4:6]}, "status": "rejected"}
    resp = client.post(url(team, "/samples-bulk"), headers=team.lead.headers, json=body)
    assert resp.status_code == 200 and resp.json()["changed"] == 2, resp.text
    assert check(db, pid)["rejected"] == 3
    monkeypatch.setattr(review_bulk, "TASK_THRESHOLD", 2)
    monkeypatch.setattr(review_bulk, "BATCH", 2)
    body = {"filter": {"status": ["pending"]}, "status": "accepted", "add_tags": ["bulk"]}
    resp = client.post(url(team, "/samples-bulk"), headers=team.lead.headers, json=body)
    assert resp.status_code == 202, resp.text
    status = client.get(resp.json()["status_url"], headers=team.lead.headers).json()
    assert status["status"] == "succeeded" and status["changed"] == 6
    counts = check(db, pid)
    assert (counts["pending"], counts["accepted"]) == (0, 8)
    # import (the import runner, eager in tests)
    lines = b"".join(orjson.dumps({"messages": qa(i)}) + b"\n" for i in range(200, 207))
    resp = client.post(
        url(team, "/imports"),
        headers=team.owner.headers,
        files={"file": ("data.jsonl", io.BytesIO(lines))},
        data={"mode": "strict"},
    )
    assert resp.status_code == 202, resp.text
    job = client.get(url(team, f"/imports/{resp.json()['id']}"), headers=team.owner.headers)
    assert job.json()["imported"] == 7
    assert check(db, pid)["pending"] == 7
    # bulk SQL that no service function issues: a status change and a delete
    db.execute(
        text(
            "UPDATE samples SET status = 'needs_changes' WHERE project_id = :p AND status = 'rejected'"
        ),
        {"p": pid},
    )
    db.execute(text("DELETE FROM samples WHERE id IN (:a, :b)"), {"a": ids[0], "b": ids[6]})
    counts = check(db, pid)
    assert (counts["rejected"], counts["needs_changes"]) == (0, 4)
    # the page and the API read the counters
    page = client.get(f"/projects/{pid}", headers=team.viewer.headers)
    assert page.status_code == 200 and "samples pending" in page.text
    stats = client.get(url(team, "/sample-stats"), headers=team.viewer.headers).json()
    assert stats["status_counts"] == check(db, pid)
    # a deleted project takes its samples and its counters with it; the other one is untouched
    resp = client.delete(f"/api/v1/projects/{pid}", headers=team.owner.headers)
    assert resp.status_code == 204, resp.text
    check(db, other.id)
    assert (
        db.scalar(
            select(func.count())
            .select_from(ProjectSampleCount)
            .where(ProjectSampleCount.project_id == pid)
        )
        == 0
    )
    assert counters(db) == {(other.id, "pending"): 3}


@pytest.mark.skipif(not PG_URL, reason="COPY and TRUNCATE: PostgreSQL")
def test_copy_and_truncate_postgresql(db, team):  # noqa: F811
    pid = team.project_id
    make(db, pid, 2)
    raw = db.connection().connection.driver_connection
    msgs = qa(1)
    with (
        raw.cursor() as cur,
        cur.copy(
            "COPY samples (project_id, messages, status, version, content_hash, search_text, source,"
            " provenance, tags, scores, created_at, updated_at) FROM STDIN"
        ) as copy,
    ):
        for i in range(300):
            status = ("pending", "accepted", "rejected")[i % 3]
            copy.write_row(
                (
                    pid,
                    orjson.dumps(msgs).decode(),
                    status,
                    1,
                    store.content_hash(msgs),
                    "",
                    "import",
                    "{}",
                    "[]",
                    "{}",
                    "2026-12-02",
                    "2026-12-02",
                )
            )
    counts = check(db, pid)
    assert (counts["pending"], counts["accepted"], counts["rejected"]) == (102, 100, 100)
    db.execute(text("TRUNCATE samples CASCADE"))
    check(db, pid)
    assert counters(db) == {}


def _backfill(url: str) -> None:
    """Samples written before 0019 are counted by its backfill; downgrade drops the table."""
    migrate.upgrade(url, "0018_search_bigrams")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO projects (name, description, settings, created_at, updated_at)"
                " VALUES ('a', '', '{}', '2026-12-02', '2026-12-02'),"
                " ('b', '', '{}', '2026-12-02', '2026-12-02')"
            )
        )
        for i in range(9):
            conn.execute(
                text(
                    "INSERT INTO samples (project_id, messages, status, version, content_hash,"
                    " search_text, source, provenance, tags, scores, created_at, updated_at)"
                    " VALUES (:p, '[]', :s, 1, 'h', '', 'import', '{}', '[]', '{}', '2026-12-02',"
                    " '2026-12-02')"
                ),
                {"p": 1 + i % 2, "s": ("pending", "accepted", "rejected")[i % 3]},
            )
    migrate.upgrade(url)
    with engine.begin() as conn:
        exact = set(
            conn.execute(
                text("SELECT project_id, status, count(*) FROM samples GROUP BY project_id, status")
            ).all()
        )
        kept = set(
            conn.execute(
                text(
                    "SELECT project_id, status, sum(n) FROM project_sample_counts"
                    " GROUP BY project_id, status"
                )
            ).all()
        )
        assert len(exact) == 6 and kept == exact
        conn.execute(text("UPDATE samples SET status = 'accepted' WHERE project_id = 1"))
        kept = {
            (p, s): n
            for p, s, n in conn.execute(
                text(
                    "SELECT project_id, status, sum(n) FROM project_sample_counts"
                    " GROUP BY project_id, status"
                )
            ).all()
        }
        assert kept[(1, "accepted")] == 5 and kept[(1, "pending")] == 0
    migrate.downgrade(url, "0018_search_bigrams")
    with engine.connect() as conn:
        assert "project_sample_counts" not in {
            r[0]
            for r in conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables"
                    if url.startswith("postgresql")
                    else "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            )
        }
    engine.dispose()


@pytest.mark.nodb
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migration_backfills(backend, tmp_path):
    if backend == "sqlite":
        _backfill(f"sqlite:///{tmp_path / 'c.db'}")
        return
    if not PG_URL:
        pytest.skip("needs ANNOTUNE_TEST_DATABASE_URL (PostgreSQL)")
    with _scratch_postgresql() as url:
        _backfill(url)
