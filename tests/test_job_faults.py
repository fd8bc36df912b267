"""Every job kind recovers from a dead worker (issue "Reliability, proved", item 1): a build, an
export, an import, a bulk change and a document parse each left ``running`` by a worker that
died holding it (its lease taken, its heartbeat stopped) are resumed by a real worker's sweep
within the bound and finish; a retried export POST starts a fresh attempt of a dead export; and
a worker whose Redis restarts mid-job keeps running and finishes the job."""
from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from service.core import jobs
from service.core.db import utcnow
from service.models import (
    BulkJob,
    DatasetExport,
    DatasetVersion,
    DatasetVersionItem,
    Document,
    ImportJob,
)
from tests.support import worker as w
from workers import jobs as kit

needs_redis = pytest.mark.skipif(not w.redis_available(), reason="no Redis")


def _accepted_samples(client, owner, pid: int, n: int) -> None:
    for i in range(n):
        r = client.post(f"/api/v1/projects/{pid}/samples", headers=owner.headers, json={
            "status": "accepted", "messages": [{"role": "user", "content": f"question {i}"},
                                               {"role": "assistant", "content": f"answer {i}"}]})
        assert r.status_code == 201, r.text


def _abandon(db, kind, row_id) -> None:
    """What a worker killed mid-job leaves: the row claimed (running, its lease token, one
    attempt) and a heartbeat that stopped long ago."""
    lease = kit.claim(kind, row_id)
    assert lease is not None
    db.execute(update(kind.model).where(kind.model.id == row_id)
               .values(heartbeat_at=utcnow() - timedelta(minutes=10)))
    db.commit()


@pytest.mark.worker
@needs_redis
def test_every_job_kind_left_running_by_a_dead_worker_is_resumed_and_finishes(
        client, db, factories, monkeypatch, tmp_path):
    from service.datasets.jobs import BUILD, EXPORT
    from service.documents.jobs import PARSE
    from service.review import bulk as review_bulk
    from service.review.jobs import BULK
    from service.samples.jobs import IMPORT

    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "faults"},
                      headers=owner.headers).json()["id"]
    _accepted_samples(client, owner, pid, 12)
    base = f"/api/v1/projects/{pid}"
    ds = client.post(f"{base}/datasets", headers=owner.headers, json={"name": "d"}).json()
    ready = client.post(f"{base}/datasets/{ds['id']}/versions", headers=owner.headers,
                        json={"seed": 1}).json()  # eager: built here, to export below
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(jobs, "send_now", lambda name, **kw: sent.append((name, kw)))
    monkeypatch.setattr(review_bulk, "TASK_THRESHOLD", 2)
    building = client.post(f"{base}/datasets/{ds['id']}/versions", headers=owner.headers,
                           json={"seed": 2}).json()
    export = client.post(f"{base}/datasets/{ds['id']}/versions/{ready['id']}/exports",
                         headers=owner.headers, json={"format": "sharegpt"}).json()
    lines = "\n".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) for i in range(4))
    imp = client.post(f"{base}/imports", headers=owner.headers, data={"mode": "strict"},
                      files={"file": ("x.jsonl", io.BytesIO(lines.encode()))}).json()
    bulk = client.post(f"{base}/samples-bulk", headers=owner.headers,
                       json={"filter": {"status": ["accepted"]}, "add_tags": ["seen"]}).json()
    doc = client.post(f"{base}/documents", headers=owner.headers, files=[
        ("files", ("notes.md", io.BytesIO(b"# Notes\n\nSome text to chunk.\n"), "text/markdown"))
    ]).json()["results"][0]
    rows = [(BUILD, building["id"]), (EXPORT, export["id"]), (IMPORT, imp["id"]),
            (BULK, bulk["job_id"]), (PARSE, doc["document_id"])]
    assert len(sent) == 5
    for kind, row_id in rows:
        _abandon(db, kind, row_id)
    monkeypatch.undo()

    log = tmp_path / "w.log"
    w.purge()
    stale = 2  # heartbeat every 0.67 s, sweep every second
    with w.running_worker("ingest", name="faults", log_path=log,
                          ANNOTUNE_JOB_STALE_SECONDS=str(stale)):
        started = time.time()
        deadline = started + 60
        while time.time() < deadline:
            db.expire_all()
            states = [db.get(kind.model, row_id).status for kind, row_id in rows]
            if states == ["ready", "ready", "succeeded", "succeeded", "parsed"]:
                break
            time.sleep(0.2)
        took = time.time() - started
    text = log.read_text(errors="replace")
    assert states == ["ready", "ready", "succeeded", "succeeded", "parsed"], (states, text[-3000:])
    assert took < 30, took  # the sweep takes them within a second or two; the rest is the work
    for kind, row_id in rows:
        row = db.get(kind.model, row_id)
        assert row.attempts == 2 and row.lease_token is None and row.error is None
    version = db.get(DatasetVersion, building["id"])
    assert db.scalar(select(func.count()).select_from(DatasetVersionItem).where(
        DatasetVersionItem.version_id == version.id)) == version.counts["total"] == 12
    assert db.get(ImportJob, imp["id"]).imported == 4
    assert db.get(BulkJob, bulk["job_id"]).state["changed"] == 12
    assert db.get(Document, doc["document_id"]).chunk_count >= 1
    assert db.get(DatasetExport, export["id"]).manifest_sha256


def test_a_job_whose_attempts_are_spent_fails_with_the_reason(client, db, factories,
                                                              monkeypatch):
    from service.documents.jobs import PARSE

    monkeypatch.setattr(jobs, "send_now", lambda name, **kw: None)
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "spent"},
                      headers=owner.headers).json()["id"]
    doc = client.post(f"/api/v1/projects/{pid}/documents", headers=owner.headers, files=[
        ("files", ("a.md", io.BytesIO(b"# A\n\ntext\n"), "text/markdown"))]).json()["results"][0]
    for attempt in range(1, PARSE.max_attempts + 1):
        _abandon(db, PARSE, doc["document_id"])
        assert kit.requeue_stale({"ingest"}) == {"document parse": [doc["document_id"]]}
        db.expire_all()
        row = db.get(Document, doc["document_id"])
        assert row.attempts == attempt
        assert row.status == ("uploaded" if attempt < PARSE.max_attempts else "failed")
    assert "gave up after 3 attempts" in row.error and row.finished_at is not None
    page = client.get(f"/api/v1/projects/{pid}/documents/{row.id}", headers=owner.headers).json()
    assert page["status"] == "failed" and "gave up" in page["error"]


def test_a_retried_export_post_restarts_a_dead_export(client, db, factories, monkeypatch):
    from service.datasets.jobs import EXPORT

    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "export"},
                      headers=owner.headers).json()["id"]
    _accepted_samples(client, owner, pid, 4)
    base = f"/api/v1/projects/{pid}"
    ds = client.post(f"{base}/datasets", headers=owner.headers, json={"name": "d"}).json()
    v = client.post(f"{base}/datasets/{ds['id']}/versions", headers=owner.headers,
                    json={"seed": 1}).json()
    url = f"{base}/datasets/{ds['id']}/versions/{v['id']}/exports"
    with monkeypatch.context() as m:
        m.setattr(jobs, "send_now", lambda name, **kw: None)
        first = client.post(url, headers=owner.headers, json={"format": "alpaca"}).json()
    _abandon(db, EXPORT, first["id"])  # its worker died mid-export
    again = client.post(url, headers=owner.headers, json={"format": "alpaca"})
    assert again.status_code in (200, 201, 202), again.text
    db.expire_all()
    export = db.get(DatasetExport, first["id"])
    assert export.status == "ready" and export.attempts == 1  # a fresh attempt, run eagerly


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_server(port: int, folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if redis.Redis(port=port, socket_connect_timeout=0.5).ping():
                return proc
        except redis.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.mark.worker
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_worker_survives_a_redis_restart_mid_job(client, db, factories, monkeypatch, tmp_path):
    """A Redis the test owns, restarted while a generation job runs: the worker reconnects, the
    job finishes, and work sent while Redis was down is delivered once it is back."""
    from service.generation import service as gs
    from tests.generation.test_engine import make_chunks
    from tests.support.openai_server import FakeOpenAIServer
    from tests.test_resend import broker

    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = _redis_server(port, tmp_path)
    monkeypatch.setattr(w, "REDIS_URL", url)
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "redis"},
                      headers=owner.headers).json()["id"]
    make_chunks(db, pid, 12)
    log = tmp_path / "w.log"
    try:
        with FakeOpenAIServer(latency=0.5, responder=lambda r: "kw") as llm:
            prov = gs.create_provider(db, project_id=pid, data={
                "name": "p", "base_url": llm.url, "model": "m", "max_concurrency": 1})
            db.commit()
            with w.running_worker("ingest,generate", name="redis", log_path=log,
                                  ANNOTUNE_JOB_STALE_SECONDS="3") as proc:
                with broker(monkeypatch, url):
                    r = client.post(f"/api/v1/projects/{pid}/generation-jobs",
                                    headers=owner.headers, json={
                                        "template_id": _template(db), "provider_id": prov.id})
                job_id = r.json()["id"]
                _wait(db, lambda: _done(db, job_id) >= 2, 30, log)
                server.terminate()
                server.wait(10)
                time.sleep(3)  # the broker is gone for a while
                server = _redis_server(port, tmp_path)  # empty: its queues are forgotten
                _wait(db, lambda: _status(db, job_id) == "succeeded", 90, log)
                assert proc.poll() is None  # the same worker process, still running
    finally:
        server.terminate()
        server.wait(10)
    text = log.read_text(errors="replace")
    assert "Unrecoverable error" not in text, text[-3000:]
    assert _done(db, job_id) == 12


def _template(db) -> int:
    from service.generation import service as gs
    from service.models import PromptTemplate

    gs.ensure_builtin_templates(db)
    db.commit()
    return db.scalar(select(PromptTemplate.id).where(PromptTemplate.name == "keywords.en"))


def _done(db, job_id: int) -> int:
    from service.models import GenerationJob

    db.expire_all()
    return db.get(GenerationJob, job_id).done_units


def _status(db, job_id: int) -> str:
    from service.models import GenerationJob

    db.expire_all()
    return db.get(GenerationJob, job_id).status


def _wait(db, predicate, timeout: float, log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(log.read_text(errors="replace")[-3000:])
