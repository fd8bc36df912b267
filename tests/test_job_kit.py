"""The job kit (workers/jobs.py) with real workers: one runner per job however slow its units,
cancel within one unit, no starvation of parsing/imports by heavy local work, exactly-once
effects after SIGKILL, and the layering rules the kit was built for."""
from __future__ import annotations

import ast
import io
import json
import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.models import GenerationJob, GenerationUnit, ImportJob, Sample
from tests.generation.test_engine import make_chunks
from tests.support import worker as w
from tests.support.openai_server import FakeOpenAIServer
from tests.test_resend import broker

ROOT = Path(__file__).resolve().parents[1]
needs_redis = pytest.mark.skipif(not w.redis_available(), reason="no Redis")


def _job(db, job_id: int) -> GenerationJob:
    db.expire_all()
    return db.get(GenerationJob, job_id)


def _wait(db, predicate, timeout: float, what: str, *logs: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        db.expire_all()
        if predicate():
            return
        time.sleep(0.2)
    tail = "\n".join(p.read_text(errors="replace")[-2500:] for p in logs if p.exists())
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def _samples(db, job_id: int) -> int:
    return db.scalar(select(func.count()).select_from(Sample)
                     .where(Sample.generation_job_id == job_id))


def _custom_template(db, project_id: int, name: str = "echo") -> int:
    from service.generation import service as gs

    t = gs.create_template(db, project_id=project_id, name=name, kind="custom", lang="en",
                           text="Write about: {{ text }}", parser={"kind": "text"}, actor_id=None)
    db.commit()
    return t.id


@pytest.mark.worker
@needs_redis
def test_slow_local_job_one_runner_cancel_within_a_unit_and_imports_not_starved(
        client, db, factories, monkeypatch, tmp_path):
    """A local-model job whose units each take longer than the stale time: the heartbeat keeps
    it held by its one runner (no sweep, no second runner, no unit past the cap); an import sent
    meanwhile finishes on the other worker while the job runs; cancel stops it within one unit
    and nothing is written after."""
    pytest.importorskip("torch")
    from service.generation import service as gs
    from workers.training.models import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny")
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "kit"}, headers=owner.headers).json()["id"]
    make_chunks(db, pid, 20)
    prov = gs.create_provider(db, project_id=pid, data={
        "name": "local", "kind": "local", "model": str(model), "max_concurrency": 1,
        "default_params": {"max_tokens": 600}})
    db.commit()
    job = gs.create_job(db, project_id=pid, template_id=_custom_template(db, pid),
                        provider_id=prov.id, params={"sampling": {"max_tokens": 600},
                                                     "keep_truncated": True})  # slow on purpose
    db.info.pop("annotune_pending_tasks", None)  # sent through the real broker below
    db.commit()
    assert job.queue == "gpu" and job.total_units == 20
    env = {"ANNOTUNE_JOB_STALE_SECONDS": "3"}  # heartbeat every second, sweep every 1.5 s
    logs = (tmp_path / "heavy.log", tmp_path / "light.log")
    w.purge()
    # the shape of `annotune up`: heavy local work on its own worker process
    with w.running_worker("gpu", name="heavy", log_path=logs[0], **env), \
            w.running_worker("ingest,generate", name="light", concurrency=2, log_path=logs[1],
                             **env):
        app = w.client()
        for _ in range(2):  # a duplicate delivery finds the job held and does nothing
            app.send_task("generation.run_job", kwargs={"job_id": job.id}, queue="gpu")
        _wait(db, lambda: _job(db, job.id).done_units >= 1, 120, "the first unit", *logs)
        # an import while the heavy worker is busy: it must not wait for the job
        lines = "\n".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                   {"role": "assistant", "content": f"a{i}"}]})
                          for i in range(5))
        with broker(monkeypatch, w.REDIS_URL):
            resp = client.post(f"/api/v1/projects/{pid}/imports", headers=owner.headers,
                               files={"file": ("more.jsonl", io.BytesIO(lines.encode()))},
                               data={"mode": "strict"})
        assert resp.status_code in (200, 201, 202), resp.text
        import_id = resp.json()["id"]
        _wait(db, lambda: db.get(ImportJob, import_id).status == "succeeded", 30, "the import",
              *logs)
        assert _job(db, job.id).status == "running"  # the import did not wait behind the job
        _wait(db, lambda: _job(db, job.id).done_units >= 3, 120, "three units", *logs)
        cancel = client.post(f"/api/v1/projects/{pid}/generation-jobs/{job.id}/cancel",
                             headers=owner.headers)
        assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
        # the units done when the cancel landed (the job row's counters follow the units once
        # a second, so they may not count the last one yet); a write after it is refused
        at_cancel = db.scalar(select(func.count()).where(GenerationUnit.job_id == job.id,
                                                         GenerationUnit.status == "done"))
        time.sleep(4)  # longer than a unit: the one in flight finishes (or stops) meanwhile
        after = _job(db, job.id)
    assert after.status == "cancelled"
    assert after.done_units == at_cancel  # nothing counted after the cancel...
    assert _samples(db, job.id) == after.done_units  # ...nor written; counters equal rows
    assert after.done_units < 20
    assert after.attempts == 1  # one runner, never re-queued by the sweeper
    max_attempts = db.scalar(select(func.max(GenerationUnit.attempts))
                             .where(GenerationUnit.job_id == job.id))
    assert max_attempts == 1
    slowest = db.scalar(select(func.max(GenerationUnit.latency_ms))
                        .where(GenerationUnit.job_id == job.id))
    assert slowest > 3000  # units really outlasted the stale time
    text = "".join(p.read_text(errors="replace") for p in logs)
    swept = [line for line in text.splitlines() if "stale jobs re-queued" in line]
    assert swept == []


@pytest.mark.worker
@needs_redis
def test_sigkill_twice_mid_unit_then_every_unit_has_exactly_one_output(db, client, factories,
                                                                       tmp_path):
    from service.generation import service as gs

    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "kill"}, headers=owner.headers).json()["id"]
    make_chunks(db, pid, 24)
    env = {"ANNOTUNE_JOB_STALE_SECONDS": "2"}
    with FakeOpenAIServer(latency=0.4, responder=lambda r: "关键词") as server:
        prov = gs.create_provider(db, project_id=pid, data={
            "name": "p", "base_url": server.url, "model": "m", "max_concurrency": 3,
            "timeout_s": 5})
        db.commit()
        job = gs.create_job(db, project_id=pid, template_id=_custom_template(db, pid),
                            provider_id=prov.id)
        db.info.pop("annotune_pending_tasks", None)
        db.commit()
        w.purge()
        for n, name in enumerate(("k1", "k2")):
            with w.running_worker("generate", name=name, log_path=tmp_path / f"{name}.log",
                                  **env) as proc:
                if n == 0:
                    w.client().send_task("generation.run_job", kwargs={"job_id": job.id},
                                         queue="generate")
                # this worker holds the job (the first claim, then a resume after the sweep)
                # and does a few units of its own before it is killed
                _wait(db, lambda a=n + 1: _job(db, job.id).attempts == a, 60,
                      f"claim {n + 1}", tmp_path / f"{name}.log")
                target = _job(db, job.id).done_units + 3
                _wait(db, lambda t=target: _job(db, job.id).done_units >= t, 60,
                      f"{target} units", tmp_path / f"{name}.log")
                os.killpg(proc.pid, signal.SIGKILL)  # mid-unit: three calls are in flight
                proc.wait()
        with w.running_worker("generate", name="k3", log_path=tmp_path / "k3.log", **env):
            _wait(db, lambda: _job(db, job.id).status in ("succeeded", "failed"), 90,
                  "the job to end", tmp_path / "k3.log")
    done = _job(db, job.id)
    assert done.status == "succeeded" and done.error is None
    assert done.attempts == 3  # two resumes after the kills, within the cap
    units = db.execute(select(GenerationUnit.status, GenerationUnit.attempts)
                       .where(GenerationUnit.job_id == job.id)).all()
    assert [s for s, _ in units] == ["done"] * 24
    assert max(a for _, a in units) <= 3
    keys = db.scalars(select(Sample.unit_key).where(Sample.generation_job_id == job.id)).all()
    assert len(keys) == len(set(keys)) == 24 == done.done_units
    assert done.failed_units == 0


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


DOMAINS = ("auth", "datasets", "documents", "evaluation", "generation", "projects", "review",
           "samples", "training", "users")


@pytest.mark.nodb
def test_layers_service_never_imports_workers_and_core_imports_no_domain():
    offenders = []
    for path in sorted((ROOT / "service").rglob("*.py")):
        rel = path.relative_to(ROOT)
        for module in _imports(path):
            if module == "workers" or module.startswith("workers."):
                offenders.append(f"{rel}: {module}")
            if rel.parts[1] == "core" and any(
                    module == f"service.{d}" or module.startswith(f"service.{d}.")
                    for d in DOMAINS):
                offenders.append(f"{rel}: {module}")
    assert offenders == []


def test_a_queued_job_says_what_it_waits_for(client, db, factories, monkeypatch):
    from service.core import jobs
    from service.generation import service as gs

    sent = []
    monkeypatch.setattr(jobs, "send_now", lambda name, **kw: sent.append((name, kw)))
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "wait"}, headers=owner.headers).json()["id"]
    make_chunks(db, pid, 2)
    remote = gs.create_provider(db, project_id=pid, data={"name": "r", "base_url":
                                                           "http://127.0.0.1:9/v1", "model": "m"})
    local = gs.create_provider(db, project_id=pid, data={"name": "l", "kind": "local",
                                                          "model": "smollm2-135m-instruct"})
    db.commit()
    waits = {}
    for prov in (remote, local):
        tid = _custom_template(db, pid, name=f"echo-{prov.kind}")
        r = client.post(f"/api/v1/projects/{pid}/generation-jobs", headers=owner.headers,
                        json={"template_id": tid, "provider_id": prov.id})
        assert r.status_code in (200, 201), r.text
        job = client.get(f"/api/v1/projects/{pid}/generation-jobs/{r.json()['id']}",
                         headers=owner.headers).json()
        assert job["status"] == "queued" and job["sent_at"] and job["attempts"] == 0
        waits[prov.kind] = job["waiting"]
    assert waits == {"openai": "waiting for a free worker on the 'generate' queue",
                     "local": "waiting for a free worker on the 'gpu' queue"}
    assert [name for name, _ in sent] == ["generation.run_job"] * 2
