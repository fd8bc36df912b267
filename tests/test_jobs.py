"""enqueue() sends only after commit and never after rollback."""
from __future__ import annotations

import pytest

from service.core import jobs


@pytest.fixture
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(jobs, "send_now", lambda name, **kw: calls.append((name, kw)))
    return calls


def test_enqueue_waits_for_commit(db, sent):
    jobs.enqueue(db, "system.ping", payload="a")
    assert sent == []
    db.commit()
    assert sent == [("system.ping", {"payload": "a"})]


def test_enqueue_dropped_on_rollback(db, sent):
    from service.models import User

    db.add(User(email="x@example.com", password_hash="x"))
    db.flush()
    jobs.enqueue(db, "system.ping", payload="b")
    db.rollback()
    db.commit()
    assert sent == []


def test_queue_routing():
    assert jobs.queue_for("training.run") == "gpu"
    assert jobs.queue_for("generation.run_unit") == "generate"
    assert jobs.queue_for("evaluation.endpoint_run") == "generate"
    assert jobs.queue_for("evaluation.local_run") == "gpu"
    assert jobs.queue_for("documents.parse") == "ingest"


def test_eager_task_runs_through_the_real_task(db):
    from workers.celery_app import app

    result = app.tasks["system.ping"].apply(kwargs={"payload": "hi"}).get()
    assert result["payload"] == "hi" and result["db"] == 1


def test_savepoints_keep_outer_tasks_and_drop_rolled_back_ones(db, sent):
    jobs.enqueue(db, "system.ping", payload="outer")
    with db.begin_nested():
        jobs.enqueue(db, "system.ping", payload="kept")
    assert sent == []  # releasing a savepoint is not a commit
    try:
        with db.begin_nested():
            jobs.enqueue(db, "system.ping", payload="dropped")
            raise ValueError
    except ValueError:
        pass
    db.commit()
    assert [kw["payload"] for _, kw in sent] == ["outer", "kept"]
