"""The generation runner's batches (workers/generation/batching.py, issue 23.4): units claimed
one per thread in one transaction, outcomes written by one writer thread, many to a transaction,
while the threads go on to their next unit. Real PostgreSQL/SQLite, the real runner, a real HTTP
model server."""
from __future__ import annotations

import threading

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
