"""enqueue() sends only after commit and never after rollback."""
from __future__ import annotations

import pytest

from service.core import jobs
from service.generation.jobs import GENERATION


@pytest.fixture
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(jobs, "send_now", lambda name, **kw: calls.append((name, kw)))
    return calls


def test_enqueue_waits_for_commit(db, sent):
    jobs.enqueue(db, jobs.PING, payload="a")
    assert sent == []
    db.commit()
    assert sent == [("system.ping", {"payload": "a"})]


def test_enqueue_dropped_on_rollback(db, sent):
    from service.models import User

    db.add(User(email="x@example.com", password_hash="x"))
    db.flush()
    jobs.enqueue(db, jobs.PING, payload="b")
    db.rollback()
    db.commit()
    assert sent == []


def test_queue_routing_comes_from_the_declarations():
    from workers import jobs as kit

    kinds = kit.load_kinds()
    assert jobs.queue_for("training.run") == "gpu"
    assert jobs.queue_for("generation.run_job") == "generate"
    assert jobs.queue_for("evaluation.endpoint_run") == "generate"
    assert jobs.queue_for("evaluation.run_local") == "gpu"
    assert jobs.queue_for("documents.parse") == "ingest"
    assert jobs.queue_for("system.ping") == "ingest"
    with pytest.raises(KeyError, match="not declared"):
        jobs.queue_for("generation.run_unit")
    # every job table is driven by a declared kind, and every kind's task exists in the worker
    from service.core.db import Base
    from service.models.job import JobMixin
    from workers.celery_app import app

    job_tables = {m.class_.__tablename__ for m in Base.registry.mappers
                  if issubclass(m.class_, JobMixin)}
    assert {k.model.__tablename__ for k in kinds.values()} == job_tables
    assert {"generation_jobs", "training_jobs", "eval_runs", "dataset_versions",
            "dataset_exports", "import_jobs", "bulk_jobs", "documents"} <= job_tables
    assert all(name in app.tasks for name in kinds)


def test_enqueue_takes_a_declaration_not_a_string(db):
    with pytest.raises(TypeError, match="declaration"):
        jobs.enqueue(db, "system.ping")


def test_eager_task_runs_through_the_real_task(db):
    from workers.celery_app import app

    result = app.tasks["system.ping"].apply(kwargs={"payload": "hi"}).get()
    assert result["payload"] == "hi" and result["db"] == 1


def test_savepoints_keep_outer_tasks_and_drop_rolled_back_ones(db, sent):
    jobs.enqueue(db, jobs.PING, payload="outer")
    with db.begin_nested():
        jobs.enqueue(db, jobs.PING, payload="kept")
    assert sent == []  # releasing a savepoint is not a commit
    try:
        with db.begin_nested():
            jobs.enqueue(db, jobs.PING, payload="dropped")
            raise ValueError
    except ValueError:
        pass
    db.commit()
    assert [kw["payload"] for _, kw in sent] == ["outer", "kept"]


def _sent_at(job_id):
    """``sent_at`` as another connection sees it (the marks are committed on their own)."""
    from service.core.db import get_sessionmaker
    from service.models import GenerationJob

    with get_sessionmaker()() as other:
        return other.get(GenerationJob, job_id).sent_at


@pytest.fixture
def unsent_job(db, client, factories, sent):
    """A queued generation job whose message never left (``sent_at`` NULL)."""
    from tests.test_resend import make_job

    job = make_job(db, client, factories, "http://127.0.0.1:9/v1", lose_message=True)
    assert _sent_at(job.id) is None
    return job.id


def test_mark_sets_sent_at_only_after_the_send(db, sent, unsent_job):

    jobs.enqueue(db, GENERATION, unsent_job)
    db.flush()
    assert _sent_at(unsent_job) is None and sent == []
    db.commit()
    assert sent == [("generation.run_job", {"job_id": unsent_job})]
    assert _sent_at(unsent_job) is not None


def test_mark_is_dropped_with_a_rolled_back_enqueue(db, sent, unsent_job):

    with pytest.raises(ValueError), db.begin_nested():
        jobs.enqueue(db, GENERATION, unsent_job)
        raise ValueError
    db.commit()
    assert sent == [] and _sent_at(unsent_job) is None


def test_failed_send_leaves_sent_at_null_but_an_eager_run_counts(db, monkeypatch, unsent_job):
    from service.core.config import get_settings

    def broker_down(name, **kw):
        raise ConnectionError("broker down")

    monkeypatch.setattr(jobs, "send_now", broker_down)
    live = get_settings().model_copy(update={"celery_eager": False})
    monkeypatch.setattr(jobs, "get_settings", lambda: live)
    jobs.enqueue(db, GENERATION, unsent_job)
    db.commit()
    assert _sent_at(unsent_job) is None  # the sweepers re-send it

    # eager (tests, scripts): the task ran in this process, so it was delivered, even if it failed
    monkeypatch.setattr(jobs, "get_settings", get_settings)
    jobs.enqueue(db, GENERATION, unsent_job)
    db.commit()
    assert _sent_at(unsent_job) is not None
