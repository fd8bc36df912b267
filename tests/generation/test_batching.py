"""The generation runner's batches (workers/generation/batching.py, issue 23.4): units claimed
one per thread in one transaction, outcomes written by one writer thread, many to a transaction,
while the threads go on to their next unit. Real PostgreSQL/SQLite, the real runner, a real HTTP
model server."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from service.core.db import get_sessionmaker
from service.generation.jobs import GENERATION
from service.models import GenerationJob, GenerationUnit, Sample
from tests.generation.test_engine import (
    _template_id,
    make_chunks,
    project,  # noqa: F401  (fixture)
)
from tests.support.openai_server import FakeOpenAIServer
from tests.support.statements import statements
from workers import jobs as kit
from workers.generation import batching


def test_a_job_claims_one_batch_per_round_of_threads(client, db, project,  # noqa: F811
                                                      monkeypatch):
    owner, pid = project
    sizes: list[int] = []
    real_claim = batching.claim_units

    def claim(job_id, n):
        got = real_claim(job_id, n)
        sizes.append(len(got))
        return got

    monkeypatch.setattr(batching, "claim_units", claim)
    make_chunks(db, pid, 24)
    with FakeOpenAIServer(responder=lambda req: "超声;甲状腺", latency=0.05) as server:
        prov = client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers, json={
            "name": "p", "base_url": server.url, "model": "fake-model",
            "max_concurrency": 8}).json()
        tid = _template_id(client, owner, pid, "keywords.zh")
        with statements() as seen:
            job = client.post(f"/api/v1/projects/{pid}/generation-jobs", headers=owner.headers,
                              json={"template_id": tid, "provider_id": prov["id"]}).json()
    job = client.get(f"/api/v1/projects/{pid}/generation-jobs/{job['id']}",
                     headers=owner.headers).json()
    assert job["status"] == "succeeded" and job["done_units"] == 24, job
    # 24 units, 8 threads: 3 claims of 8, not one per unit (then each thread finds none left)
    assert [n for n in sizes if n] == [8, 8, 8], sizes
    assert sum(s.startswith("WITH picked AS") for s in seen) == len(sizes) <= 3 + 2 * 8
    units = db.execute(select(GenerationUnit.status, GenerationUnit.attempts, GenerationUnit.requests)
                       .where(GenerationUnit.job_id == job["id"])).all()
    assert all(u == ("done", 1, 1) for u in units), units
    assert db.scalar(select(func.count()).select_from(Sample).where(
        Sample.generation_job_id == job["id"])) == 24


def _job_with_units(db, pid: int, n: int, monkeypatch) -> int:
    """A queued job of ``n`` units that nothing runs (the test drives its parts)."""
    from service.core import jobs
    from service.generation import service as gs
    from service.models import PromptTemplate

    monkeypatch.setattr(jobs, "send_now", lambda *a, **k: None)
    make_chunks(db, pid, n)
    gs.ensure_builtin_templates(db)
    tid = db.scalar(select(PromptTemplate.id).where(PromptTemplate.name == "keywords.en"))
    prov = gs.create_provider(db, project_id=pid, data={
        "name": "offline", "base_url": "http://127.0.0.1:9", "model": "m"})
    job = gs.create_job(db, project_id=pid, template_id=tid, provider_id=prov.id)
    db.commit()
    assert job.status == "queued"
    return job.id


def test_claim_release_and_a_writer_that_batches_what_waits(db, project,  # noqa: F811
                                                             monkeypatch):
    from workers.generation.runner import Attempt

    _owner, pid = project
    job_id = _job_with_units(db, pid, 6, monkeypatch)
    lease = kit.claim(GENERATION, job_id)
    assert lease is not None
    claimed = batching.claim_units(job_id, 4)
    assert len(claimed) == 4 and all(c.chunk is not None and c.attempt == 1 for c in claimed)
    batching.release_units(claimed[2:])
    db.expire_all()
    rows = dict(db.execute(select(GenerationUnit.id, GenerationUnit.status)
                           .where(GenerationUnit.job_id == job_id)).all())
    assert sorted(rows.values()) == ["pending"] * 4 + ["running"] * 2
    assert db.scalar(select(func.sum(GenerationUnit.attempts)).where(
        GenerationUnit.job_id == job_id)) == 2  # the released claims' attempts undone

    recorded: list[int] = []
    writer = batching.Writer(lease, lambda attempt: recorded.append(attempt.unit_id))
    gate = threading.Event()
    with statements(transactions=True) as seen:
        def first(db_):  # holds the writer until the other outcomes wait behind it
            gate.wait(10)
            db_.execute(GenerationUnit.__table__.update().where(
                GenerationUnit.id == claimed[0].id).values(status="done"))

        def mark(unit_id: int):
            def apply(db_):
                if not db_.execute(GenerationUnit.__table__.update().where(
                        GenerationUnit.id == unit_id, GenerationUnit.status == "running")
                        .values(status="done")).rowcount:
                    raise batching.NotOurs
            return apply

        attempts = [Attempt(unit_id=c.id, number=1) for c in claimed]
        writer.submit(batching.Outcome(attempts[0], first))
        writer.submit(batching.Outcome(attempts[1], mark(claimed[1].id)))
        writer.submit(batching.Outcome(attempts[2], mark(claimed[2].id)))  # released: not ours
        gate.set()
        writer.flush()
        assert writer.settled == 3
        writer.close()
    commits = [s for s in seen if s == "COMMIT"]
    assert len(commits) <= 2, seen  # the first outcome's, then the two that waited
    assert attempts[0].recorded and attempts[1].recorded and not attempts[2].recorded
    assert recorded == [claimed[2].id]  # not written: its cost recorded on the unit instead
    db.expire_all()
    assert db.get(GenerationUnit, claimed[1].id).status == "done"
    assert db.get(GenerationUnit, claimed[2].id).status == "pending"


def test_a_writer_whose_lease_is_gone_writes_nothing_and_stops(db, project,  # noqa: F811
                                                               monkeypatch):
    from workers.generation.runner import Attempt

    _owner, pid = project
    job_id = _job_with_units(db, pid, 2, monkeypatch)
    lease = kit.claim(GENERATION, job_id)
    claimed = batching.claim_units(job_id, 2)
    with get_sessionmaker()() as s:  # cancelled meanwhile
        s.execute(GenerationJob.__table__.update().where(GenerationJob.id == job_id)
                  .values(cancel_requested=True))
        s.commit()
    recorded: list[int] = []
    writer = batching.Writer(lease, lambda attempt: recorded.append(attempt.unit_id))
    attempt = Attempt(unit_id=claimed[0].id, number=1)

    def apply(db_):
        db_.execute(GenerationUnit.__table__.update().where(
            GenerationUnit.id == claimed[0].id).values(status="done"))

    writer.submit(batching.Outcome(attempt, apply))
    writer.flush()
    assert writer.stopped and not attempt.recorded and recorded == [claimed[0].id]
    writer.close()
    db.expire_all()
    assert db.get(GenerationUnit, claimed[0].id).status == "running"


def _done_rows(pid: int, job_id: int, key: str, n: int) -> list[dict]:
    """``n`` sample rows of a unit, with the keys the runner's ``_sample_row`` writes."""
    from service.samples import store

    return [{"project_id": pid, **store.message_columns([
                {"role": "user", "content": f"问题 {key} {i} \"quoted\" \\ back"},
                {"role": "assistant", "content": f"answer {i} 🙂"}]),
             "status": "pending", "source": "generation", "unit_key": f"{key}#{i}",
             "chunk_id": None, "document_id": None, "generation_job_id": job_id,
             "domain_leaf_id": None, "reasoning": "why" if i else None,
             "provenance": {"generation": {"job_id": job_id, "unit": key,
                                           "params": {"temperature": 0.7}}},
             "tags": ["truncated"] if i else [], "scores": {}, "version": 1}
            for i in range(n)]


def test_the_one_statement_writes_what_the_three_statements_write(db, project,  # noqa: F811
                                                                  monkeypatch):
    """PostgreSQL writes a batch of done units in one statement (``_write_done_pg``); every
    column of the samples, their revisions and the units' marks is what the executemany path
    (SQLite's, and PostgreSQL's before) writes for the same outcomes."""
    from sqlalchemy import inspect as sa_inspect

    from service.core.db import utcnow
    from service.models import SampleRevision

    if db.get_bind().dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has only the executemany path (the rest of "
                    "this file runs it there)")
    _owner, pid = project
    job_id = _job_with_units(db, pid, 6, monkeypatch)
    claimed = batching.claim_units(job_id, 6)
    usage = {"prompt_tokens": 11, "completion_tokens": 7, "requests": 2, "repairs": 1,
             "retries": 0}
    sizes = [2, 0, 3]  # a unit may produce no sample (its mark has no sample id)

    def batch(units, tag):
        return [batching.Done(unit_id=u.id, rows=_done_rows(pid, job_id, f"{tag}{k}", n),
                              comment=f"generated by job {job_id}", raw_output=f"raw {k}",
                              latency_ms=100 + k, usage=usage)
                for k, (u, n) in enumerate(zip(units, sizes, strict=True))]

    before = utcnow()
    one, each = batch(claimed[:3], "one"), batch(claimed[3:], "each")
    with get_sessionmaker()() as s:
        batching._write_done(s, one)  # PostgreSQL: the one statement
        conn = s.connection()
        batching._write_done_each(conn, each, [r for d in each for r in d.rows])
        s.commit()
    db.expire_all()

    def columns(obj, skip):
        return {a.key: getattr(obj, a.key) for a in sa_inspect(obj).mapper.column_attrs
                if a.key not in skip}

    for d_one, d_each in zip(one, each, strict=True):
        u_one, u_each = db.get(GenerationUnit, d_one.unit_id), db.get(GenerationUnit, d_each.unit_id)
        skip = {"id", "key", "chunk_id", "sample_id", "updated_at", "index"}
        assert columns(u_one, skip) == columns(u_each, skip)
        assert u_one.status == "done" and u_one.prompt_tokens == 11 and u_one.repairs == 1
        assert u_one.updated_at >= before
        samples = []
        for d in (d_one, d_each):
            rows = db.scalars(select(Sample).where(Sample.unit_key.in_(
                [r["unit_key"] for r in d.rows])).order_by(Sample.id)).all()
            assert [r.unit_key for r in rows] == [r["unit_key"] for r in d.rows]  # ids in order
            samples.append(rows)
        first = [rows[0].id if rows else None for rows in samples]
        assert [u_one.sample_id, u_each.sample_id] == first
        for s_one, s_each in zip(*samples, strict=True):
            skip = {"id", "unit_key", "created_at", "updated_at", "messages", "search_text",
                    "content_hash", "provenance"}
            assert columns(s_one, skip) == columns(s_each, skip)
            assert s_one.created_at >= before and s_one.updated_at == s_one.created_at
            assert s_one.search_text and s_one.content_hash
            assert s_one.messages[0]["content"].endswith("\"quoted\" \\ back")
            assert s_one.provenance["generation"]["params"] == {"temperature": 0.7}
            revs = [db.scalars(select(SampleRevision).where(SampleRevision.sample_id == x.id))
                    .all() for x in (s_one, s_each)]
            assert len(revs[0]) == len(revs[1]) == 1
            skip = {"id", "sample_id", "created_at", "messages_after"}
            assert columns(revs[0][0], skip) == columns(revs[1][0], skip)
            assert revs[0][0].messages_after == s_one.messages and revs[0][0].action == "create"
