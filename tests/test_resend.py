"""Jobs whose message never reached the broker are sent again: all queued jobs when a worker
starts, and, on every sweep of a running worker, exactly the queued ones with ``sent_at`` NULL."""
from __future__ import annotations

import ast
import re
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.support import worker as w

needs_redis = pytest.mark.skipif(not w.redis_available(), reason="no Redis")
# nothing listens on the discard port: a refused connection, like a broker that is down
DOWN_BROKER = "redis://127.0.0.1:9/0"


@contextmanager
def broker(monkeypatch, url: str):
    """Send tasks through the broker at ``url`` (not eagerly) while inside."""
    from service.core import jobs
    from service.core.config import get_settings

    with monkeypatch.context() as m:
        m.setenv("ANNOTUNE_CELERY_EAGER", "false")
        m.setenv("ANNOTUNE_BROKER_URL", url)
        get_settings.cache_clear()
        jobs.client_app.cache_clear()
        yield
    get_settings.cache_clear()
    jobs.client_app.cache_clear()


def make_job(db, client, factories, url: str, *, chunks: int = 3, lose_message: bool = False):
    """A generation job over ``chunks`` new chunks, committed (so sent as the settings say).
    ``lose_message``: the message is dropped before the commit, as if the send failed silently."""
    from service.generation import service as gs
    from service.models import PromptTemplate
    from tests.generation.test_engine import make_chunks

    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "resend"}, headers=owner.headers).json()["id"]
    make_chunks(db, pid, chunks)
    prov = gs.create_provider(db, project_id=pid, data={"name": "p", "base_url": url, "model": "m"})
    gs.ensure_builtin_templates(db)
    tid = db.scalar(select(PromptTemplate.id).where(PromptTemplate.name == "keywords.en"))
    job = gs.create_job(db, project_id=pid, template_id=tid, provider_id=prov.id)
    if lose_message:
        db.info.pop("annotune_pending_tasks", None)
    db.commit()
    return job


def _job(db, job_id):
    from service.models import GenerationJob

    db.expire_all()
    return db.get(GenerationJob, job_id)


def _set(db, job_id, **values):
    from sqlalchemy import update

    from service.models import GenerationJob

    db.execute(update(GenerationJob).where(GenerationJob.id == job_id).values(**values))
    db.commit()


def _older(db, job_id, seconds: float):
    _set(db, job_id, created_at=_job(db, job_id).created_at - timedelta(seconds=seconds))


def _resent_ids(log_text: str) -> list[int]:
    """Job ids in the worker's "re-sent never-delivered jobs: {...}" lines."""
    ids = []
    for found in re.findall(r"re-sent never-delivered jobs: (\{.*\})", log_text):
        ids += [i for group in ast.literal_eval(found).values() for i in group]
    return ids


def test_job_created_while_the_broker_is_down_has_no_sent_at(db, client, factories, monkeypatch):
    with broker(monkeypatch, DOWN_BROKER):
        job = make_job(db, client, factories, "http://127.0.0.1:9/v1")
    job = _job(db, job.id)
    assert job.status == "queued" and job.sent_at is None


def test_job_created_normally_has_sent_at(db, client, factories, monkeypatch):
    from tests.support.openai_server import FakeOpenAIServer

    with FakeOpenAIServer(responder=lambda r: "kw") as server:  # eager (tests, scripts): runs here
        eager = make_job(db, client, factories, server.url)
    eager = _job(db, eager.id)
    assert eager.status == "succeeded" and eager.sent_at is not None
    assert eager.sent_at >= eager.created_at


@needs_redis
def test_job_sent_to_a_real_broker_has_sent_at(db, client, factories, monkeypatch):
    w.purge()
    with broker(monkeypatch, w.REDIS_URL):
        job = make_job(db, client, factories, "http://127.0.0.1:9/v1")
    job = _job(db, job.id)
    assert job.status == "queued" and job.sent_at is not None  # waiting in Redis, sent
    import redis

    assert redis.Redis.from_url(w.REDIS_URL).llen("generate") == 1
    w.purge()


def test_sweep_resends_exactly_the_old_never_delivered_jobs(db, client, factories, monkeypatch):
    """``resend_undelivered`` in this process: queued + sent_at NULL + older than the age limit."""
    from service.core import jobs
    from workers import jobs as kit

    sent = []
    monkeypatch.setattr(jobs, "send_now", lambda name, **kw: sent.append((name, kw)))
    url = "http://127.0.0.1:9/v1"
    lost = make_job(db, client, factories, url, lose_message=True)
    delivered = make_job(db, client, factories, url)
    young = make_job(db, client, factories, url, lose_message=True)
    sent.clear()
    assert _job(db, delivered.id).sent_at is not None
    assert _job(db, lost.id).sent_at is None and _job(db, young.id).sent_at is None
    for job_id in (lost.id, delivered.id, young.id):
        _older(db, job_id, 5)
    _set(db, young.id, heartbeat_at=_job(db, young.id).created_at + timedelta(seconds=5))
    monkeypatch.setattr(kit, "RESEND_AFTER_SECONDS", 2.0)

    assert kit.resend_undelivered({"gpu"}) == {}  # generation jobs belong to generate workers
    assert kit.resend_undelivered({"generate"}) == {"generation job": [lost.id]}
    assert sent == [("generation.run_job", {"job_id": lost.id})]
    assert _job(db, lost.id).sent_at is not None
    assert kit.resend_undelivered({"generate"}) == {}  # marked: not sent twice
    assert len(sent) == 1

    def down(name, **kw):
        raise ConnectionError("broker down")

    monkeypatch.setattr(jobs, "send_now", down)
    _set(db, young.id, heartbeat_at=None)  # now old enough
    assert kit.resend_undelivered({"generate"}) == {}  # the send failed...
    assert _job(db, young.id).sent_at is None  # ...so the next sweep tries again
    monkeypatch.setattr(jobs, "send_now", lambda name, **kw: sent.append((name, kw)))
    assert kit.resend_undelivered({"generate"}) == {"generation job": [young.id]}


@pytest.mark.worker
@needs_redis
def test_queued_generation_job_is_picked_up_at_worker_start(db, client, factories, tmp_path):
    from tests.support.openai_server import FakeOpenAIServer

    with FakeOpenAIServer(responder=lambda r: "kw") as server:
        job = make_job(db, client, factories, server.url, lose_message=True)
        w.purge()
        with w.running_worker("generate", name="resend", log_path=tmp_path / "w.log"):
            w.wait_for(db, lambda: _job(db, job.id).status == "succeeded", 60, "the job",
                  tmp_path / "w.log")
    job = _job(db, job.id)
    assert job.status == "succeeded" and job.done_units == 3 and job.sent_at is not None


@pytest.mark.worker
@needs_redis
def test_running_worker_resends_never_delivered_jobs_and_only_those(db, client, factories,
                                                                     monkeypatch, tmp_path):
    from tests.support.openai_server import FakeOpenAIServer

    log = tmp_path / "w.log"
    # sweeps every 2 s (job_stale_seconds / 2)
    env = {"ANNOTUNE_JOB_STALE_SECONDS": "4"}
    with FakeOpenAIServer(responder=lambda r: "kw") as server:
        # re-sent when the worker starts: once it is marked sent, the start-up pass is over
        canary = make_job(db, client, factories, server.url, chunks=1, lose_message=True)
        w.purge()
        with w.running_worker("generate", name="resend-periodic", log_path=log, **env):
            w.wait_for(db, lambda: _job(db, canary.id).sent_at is not None, 30, "the start-up re-send", log)
            with broker(monkeypatch, DOWN_BROKER):
                lost = make_job(db, client, factories, server.url)
            assert _job(db, lost.id).sent_at is None and _job(db, lost.id).status == "queued"
            # a job the broker took (its message waits in a queue somewhere): never re-sent
            held = make_job(db, client, factories, server.url, lose_message=True)
            for job_id in (lost.id, held.id):
                _older(db, job_id, 60)  # past RESEND_AFTER_SECONDS
            held_at = _job(db, held.id).created_at
            _set(db, held.id, sent_at=held_at)
            w.wait_for(db, lambda: _job(db, lost.id).status == "succeeded", 60,
                  "the periodic re-send", log)
            time.sleep(5)  # two more sweeps
        assert _job(db, canary.id).status == "succeeded"
    text = log.read_text(errors="replace")
    assert _resent_ids(text) == [lost.id], text[-3000:]
    lost = _job(db, lost.id)
    assert lost.done_units == 3 and lost.sent_at is not None
    held = _job(db, held.id)
    assert held.status == "queued" and held.sent_at == held_at
