"""Cancelling evaluation runs (API and run page) and the retry cap on claims."""
from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from service.evaluation import metrics as metrics_mod
from service.evaluation.jobs import EVAL_ENDPOINT
from service.models import EvalPrediction, EvalRun, Project
from tests.evaluation.test_service import make_provider, ready_version, reference_responder
from tests.support.openai_server import FakeOpenAIServer
from workers import jobs as kit
from workers.evaluation import runner


def _queued_run(db, pid, vid, url, **extra) -> int:
    from service.evaluation import service as ev

    prov = make_provider(db, pid, url, **extra)
    run = ev.create_run(db, project_id=pid, dataset_version_id=vid, model_kind="endpoint",
                        provider_id=prov.id, enqueue=False, metrics=["exact_match", "char_f1"])
    db.commit()
    return run.id


def _run(db, run_id) -> EvalRun:
    db.expire_all()
    return db.get(EvalRun, run_id)


def _stale(db, run_id) -> None:
    """The run's worker died: its heartbeat is an hour old."""
    run = _run(db, run_id)
    db.execute(update(EvalRun).where(EvalRun.id == run_id)
               .values(heartbeat_at=run.heartbeat_at - timedelta(hours=1)))
    db.commit()


def test_cancel_a_queued_run_at_once(client, db, factories):

    owner, pid, vid = ready_version(client, db, factories, n=8)
    with FakeOpenAIServer(responder=reference_responder) as server:
        run_id = _queued_run(db, pid, vid, server.url)
        resp = client.post(f"/api/v1/projects/{pid}/eval-runs/{run_id}/cancel", headers=owner.headers)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert (body["status"], body["cancel_requested"], body["done"]) == ("cancelled", True, 0)
        assert body["finished_at"] is not None
        # its message arrives later (or again): a cancelled run is never claimed
        assert runner.run_endpoint(run_id) == {"status": "skipped"}
        assert server.chat_requests == 0
    run = _run(db, run_id)
    assert run.status == "cancelled" and run.attempts == 0


def test_cancel_a_running_run_keeps_its_predictions_and_scores_them(client, db, factories):

    owner, pid, vid = ready_version(client, db, factories, n=40,
                                    split={"train": 0.25, "validation": 0.0, "test": 0.75})
    with FakeOpenAIServer(latency=0.2, responder=reference_responder) as server:
        run_id = _queued_run(db, pid, vid, server.url, max_concurrency=2)
        result: list[dict] = []
        thread = threading.Thread(target=lambda: result.append(runner.run_endpoint(run_id)))
        thread.start()
        try:
            deadline = time.time() + 30
            while _run(db, run_id).done < 4 and time.time() < deadline:
                time.sleep(0.1)
            resp = client.post(f"/api/v1/projects/{pid}/eval-runs/{run_id}/cancel",
                               headers=owner.headers)
            assert resp.status_code == 200, resp.text
            assert (resp.json()["status"], resp.json()["cancel_requested"]) == ("running", True)
        finally:
            thread.join(60)
        assert result == [result[0]] and result[0]["status"] == "cancelled"
        requests = server.chat_requests
    run = _run(db, run_id)
    preds = list(db.scalars(select(EvalPrediction).where(EvalPrediction.run_id == run_id)))
    assert run.status == "cancelled" and run.finished_at is not None and run.error is None
    assert 4 <= len(preds) < run.total == 30
    assert (run.done, run.failed) == (len(preds), 0)
    assert requests == len(preds)  # stopped between items: nothing asked after the cancel
    assert run.aggregate == pytest.approx(metrics_mod.aggregate(p.scores for p in preds))
    assert run.aggregate["exact_match"] == 1.0

    again = client.post(f"/api/v1/projects/{pid}/eval-runs/{run_id}/cancel", headers=owner.headers)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "run_finished"
    assert "already cancelled" in again.json()["error"]["message"]
    assert runner.run_endpoint(run_id) == {"status": "skipped"}


def test_cancel_a_finished_run_is_409(client, db, factories):
    owner, pid, vid = ready_version(client, db, factories, n=8)

    with FakeOpenAIServer(responder=reference_responder) as server:
        run_id = _queued_run(db, pid, vid, server.url)
        assert runner.run_endpoint(run_id)["status"] == "succeeded"
    resp = client.post(f"/api/v1/projects/{pid}/eval-runs/{run_id}/cancel", headers=owner.headers)
    assert resp.status_code == 409
    error = resp.json()["error"]
    assert (error["code"], error["message"]) == ("run_finished", "evaluation run is already succeeded")
    run = _run(db, run_id)
    assert run.status == "succeeded" and not run.cancel_requested
    missing = client.post(f"/api/v1/projects/{pid}/eval-runs/424242/cancel", headers=owner.headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "run_not_found"


def test_cancel_needs_the_lead_role(client, db, factories):
    _owner, pid, vid = ready_version(client, db, factories, n=8)
    project = db.get(Project, pid)
    actors = {}
    for role in ("viewer", "annotator", "lead"):
        actors[role] = factories.make_actor(db)
        factories.add_member(db, project, _user(db, actors[role]), role)
    outsider = factories.make_actor(db)
    with FakeOpenAIServer(responder=reference_responder) as server:
        run_id = _queued_run(db, pid, vid, server.url)
    url = f"/api/v1/projects/{pid}/eval-runs/{run_id}/cancel"
    assert client.post(url).status_code == 401
    for role in ("viewer", "annotator"):
        resp = client.post(url, headers=actors[role].headers)
        assert resp.status_code == 403, (role, resp.text)
    resp = client.post(url, headers=outsider.headers)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "project_not_found"
    assert _run(db, run_id).status == "queued"
    resp = client.post(url, headers=actors["lead"].headers)
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"


def _user(db, actor):
    from service.models import User

    return db.get(User, actor.user_id)


def test_run_page_cancel_button(client, db, factories):
    owner, pid, vid = ready_version(client, db, factories, n=8)
    viewer = factories.make_user(db)
    factories.add_member(db, db.get(Project, pid), viewer, "viewer")
    with FakeOpenAIServer(responder=reference_responder) as server:
        run_id = _queued_run(db, pid, vid, server.url)
    page_url = f"/projects/{pid}/evaluation/runs/{run_id}"
    form_url = f"{page_url}/cancel"

    csrf = factories.browser_login(client, viewer.email)
    page = client.get(page_url)
    assert page.status_code == 200 and 'data-testid="cancel-run"' not in page.text
    assert client.post(form_url, data={"csrf_token": csrf}, follow_redirects=False).status_code == 403

    csrf = factories.browser_login(client, owner.email)
    page = client.get(page_url)
    form = re.search(r'<form method="post" action="([^"]+)"[^>]*data-testid="cancel-run">(.*?)</form>',
                     page.text, re.DOTALL)
    assert form and form.group(1) == form_url
    assert f'name="csrf_token" value="{csrf}"' in form.group(2)
    assert client.post(form_url, data={}, follow_redirects=False).status_code == 403  # no CSRF
    assert _run(db, run_id).status == "queued"
    resp = client.post(form_url, data={"csrf_token": csrf}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == page_url
    assert _run(db, run_id).status == "cancelled"
    page = client.get(page_url)
    assert 'data-testid="cancel-run"' not in page.text and ">cancelled<" in page.text
    again = client.post(form_url, data={"csrf_token": csrf}, follow_redirects=False)
    assert again.status_code == 409
    assert "evaluation run is already cancelled" in again.text


def test_retry_cap_fails_the_run_with_a_message(client, db, factories, monkeypatch):
    """A run whose worker keeps dying is resumed until its attempts are spent, then given up
    by the sweep with the reason."""
    from service.core import jobs
    from service.evaluation.jobs import EVAL_ENDPOINT

    cap = EVAL_ENDPOINT.max_attempts
    _owner, pid, vid = ready_version(client, db, factories, n=8)
    with FakeOpenAIServer(responder=reference_responder) as server:
        run_id = _queued_run(db, pid, vid, server.url)
    sent = []
    monkeypatch.setattr(jobs, "send_now", lambda name, **kw: sent.append((name, kw)))
    for attempt in range(1, cap + 1):
        lease = kit.claim(EVAL_ENDPOINT, run_id)
        assert lease is not None and lease.attempt == attempt
        assert kit.claim(EVAL_ENDPOINT, run_id) is None  # a duplicate message: not an attempt
        _stale(db, run_id)
        assert kit.requeue_stale({"generate"}) == {"evaluation run": [run_id]}
        run = _run(db, run_id)
        if attempt < cap:
            assert run.status == "queued" and run.sent_at is not None  # re-sent, and marked
    assert len(sent) == cap - 1
    assert runner.run_endpoint(run_id) == {"status": "skipped"}
    run = _run(db, run_id)
    assert run.status == "failed" and run.finished_at is not None
    assert run.attempts == cap
    assert f"gave up after {cap} attempts" in run.error
    assert kit.claim(EVAL_ENDPOINT, run_id) is None and _run(db, run_id).attempts == cap


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_a_finished_run_is_never_claimed(client, db, factories, status):

    _owner, pid, vid = ready_version(client, db, factories, n=8)
    with FakeOpenAIServer(responder=reference_responder) as server:
        run_id = _queued_run(db, pid, vid, server.url)
        db.execute(update(EvalRun).where(EvalRun.id == run_id)
                   .values(status=status, heartbeat_at=None))
        db.commit()
        assert kit.claim(EVAL_ENDPOINT, run_id) is None
        assert runner.run_endpoint(run_id) == {"status": "skipped"}
        assert server.chat_requests == 0
    run = _run(db, run_id)
    assert (run.status, run.attempts) == (status, 0)
