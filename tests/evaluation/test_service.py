"""Evaluation runs in process: validation, the endpoint engine (real HTTP), resume, automation."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from service.core.db import utcnow
from service.core.errors import Invalid
from service.models import EvalPrediction, EvalRun, TrainingJob
from tests.support.openai_server import Fail, FakeOpenAIServer, Reply, rate_limited
from workers import jobs as kit
from workers.evaluation import runner

TOPICS = ["thyroid ultrasound", "low rank adapters", "quantized training", "vllm serving",
          "keyword extraction", "paired bootstrap", "dataset versions", "chat templates"]


def answer_for(i: int) -> str:
    topic = TOPICS[i % len(TOPICS)]
    return f"{topic}, sample {i}"


def question_for(i: int) -> str:
    return f"Extract the keywords:\nA note about {TOPICS[i % len(TOPICS)]} number {i}"


def ready_version(client, db, factories, n: int = 16, split=None, owner=None):
    """A project with ``n`` accepted samples and a ready version (default: half test)."""
    owner = owner or factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "eval"}, headers=owner.headers).json()["id"]
    for i in range(n):
        r = client.post(f"/api/v1/projects/{pid}/samples", headers=owner.headers, json={
            "status": "accepted", "messages": [
                {"role": "system", "content": "Answer with keywords."},
                {"role": "user", "content": question_for(i)},
                {"role": "assistant", "content": answer_for(i)}]})
        assert r.status_code == 201, r.text
    ds = client.post(f"/api/v1/projects/{pid}/datasets", headers=owner.headers, json={"name": "kw"}).json()
    v = client.post(f"/api/v1/projects/{pid}/datasets/{ds['id']}/versions", headers=owner.headers,
                    json={"split": split or {"train": 0.5, "validation": 0.0, "test": 0.5},
                          "seed": 3}).json()
    v = client.get(f"/api/v1/projects/{pid}/datasets/{ds['id']}/versions/{v['id']}",
                   headers=owner.headers).json()
    assert v["status"] == "ready", v
    return owner, pid, v["id"]


def reference_responder(request) -> str:
    """A model that answers every prompt exactly (the reference is in the question)."""
    user = [m for m in request["messages"] if m["role"] == "user"][-1]["content"]
    i = int(user.rsplit(" ", 1)[-1])
    return answer_for(i)


def make_provider(db, pid, url, **extra):
    from service.generation import service as generation_service

    provider = generation_service.create_provider(db, project_id=pid, data={
        "name": "endpoint", "base_url": url, "model": "fake-model", "max_concurrency": 3,
        "timeout_s": 5, **extra})
    db.commit()
    return provider


def _field(exc: pytest.ExceptionInfo) -> str:
    return exc.value.details[0]["field"]


@pytest.mark.nodb
def test_prompt_is_the_conversation_before_the_final_answer():
    from service.evaluation.service import prompt_text, split_messages

    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "a2"}]
    prompt, reference = split_messages(msgs)
    assert reference == "a2" and prompt == msgs[:4]
    assert prompt_text(prompt) == "system: s\nuser: q1\nassistant: a1\nuser: q2"
    assert prompt_text(msgs[:2]) == "q1"
    assert split_messages([{"role": "user", "content": "q"}]) == ([{"role": "user", "content": "q"}], "")


def test_create_run_validation_names_the_field(client, db, factories, tmp_path):
    from service.evaluation import service as ev

    _owner, pid, vid = ready_version(client, db, factories, n=8)
    ok = {"project_id": pid, "dataset_version_id": vid, "model_kind": "endpoint", "enqueue": False}
    cases = [
        (dict(ok, dataset_version_id=999999), "body.dataset_version_id"),
        (dict(ok, split="validation"), "body.split"),  # empty split
        (dict(ok, model_kind="base"), "body.base_model"),
        (dict(ok, model_kind="base", base_model="no/such-model"), "body.base_model"),
        (dict(ok, model_kind="adapter"), "body.training_job_id"),
        (dict(ok, provider_id=424242), "body.provider_id"),
    ]
    job = TrainingJob(project_id=pid, dataset_version_id=vid, base_model="smollm2-135m-instruct",
                      method="lora", status="failed", artifacts={})
    db.add(job)
    db.commit()
    cases.append((dict(ok, model_kind="adapter", training_job_id=job.id), "body.training_job_id"))
    with FakeOpenAIServer() as server:
        prov = make_provider(db, pid, server.url)
        with_provider = dict(ok, provider_id=prov.id)
        cases += [
            (dict(with_provider, metrics=["exact_match", "no_such_metric"]), "body.metrics.1"),
            (dict(with_provider, metrics=["keywords"], metric_options={"keywords": {"bogus": 1}}),
             "body.metric_options.keywords"),
            (dict(with_provider, metrics=["keywords"], metric_options={"keywords": {"separators": []}}),
             "body.metric_options.keywords.separators"),
            (dict(with_provider, metrics=["exact_match"], metric_options={"rouge": {}}),
             "body.metric_options.rouge"),
            (dict(with_provider, generation={"temperature": -1}), "body.generation"),
        ]
        for kwargs, field in cases:
            with pytest.raises(Invalid) as exc:
                ev.create_run(db, **kwargs)
            assert _field(exc) == field, (kwargs, exc.value.message)
            db.rollback()
        run = ev.create_run(db, **with_provider, metrics=["keyword_f1", "exact_match"],
                            metric_options={"keywords": {"separators": [",", ";"]}})
        assert run.total == 4 and run.status == "queued" and run.base_model == "fake-model"
        assert run.generation["temperature"] == 0.0 and run.name == f"endpoint-{run.id}"
        db.rollback()


def test_endpoint_run_survives_429_and_500_and_resume_never_duplicates(client, db, factories, monkeypatch):
    from service.core import jobs
    from service.evaluation import service as ev

    _owner, pid, vid = ready_version(client, db, factories, n=16)
    with FakeOpenAIServer(responder=reference_responder) as server:
        server.script(rate_limited(0), Fail(500), Fail(502), Reply("wrong, answer"))
        prov = make_provider(db, pid, server.url)
        run = ev.create_run(db, project_id=pid, dataset_version_id=vid, model_kind="endpoint",
                            provider_id=prov.id, enqueue=False,
                            generation={"max_tokens": 32, "extra_body": {
                                "chat_template_kwargs": {"enable_thinking": False}}},
                            metrics=["exact_match", "char_f1", "keywords"])
        db.commit()
        assert runner.run_endpoint(run.id)["status"] == "succeeded"
        db.expire_all()
        run = db.get(EvalRun, run.id)
        assert (run.status, run.total, run.done, run.failed) == ("succeeded", 8, 8, 0)
        assert server.chat_requests == 8 + 3  # three retried failures
        body = server.requests[-1]["json"]
        assert body["temperature"] == 0.0 and body["max_tokens"] == 32
        assert body["chat_template_kwargs"] == {"enable_thinking": False}
        assert body["messages"][0] == {"role": "system", "content": "Answer with keywords."}
        assert body["messages"][-1]["role"] == "user"
        preds = list(db.scalars(select(EvalPrediction).where(EvalPrediction.run_id == run.id)))
        assert len({p.item_id for p in preds}) == 8
        wrong = [p for p in preds if p.prediction == "wrong, answer"]
        assert len(wrong) == 1 and wrong[0].scores["exact_match"] == 0.0
        assert all(p.scores["exact_match"] == 1.0 for p in preds if p is not wrong[0])
        assert set(preds[0].scores) == {"exact_match", "char_f1", "keyword_precision",
                                        "keyword_recall", "keyword_f1"}
        assert run.aggregate["exact_match"] == pytest.approx(7 / 8)
        assert all(p.completion_tokens > 0 and p.prompt_tokens > 0 for p in preds)

        # a worker died after 5 items: 3 rows missing, counters behind, heartbeat stale
        for p in preds[5:]:
            db.delete(p)
        run.status, run.done, run.aggregate = "running", 5, {}
        run.heartbeat_at = run.heartbeat_at - timedelta(hours=1)
        db.commit()
        before = server.chat_requests
        sent = []
        monkeypatch.setattr(jobs, "send_now", lambda name, **kw: sent.append((name, kw)))
        assert kit.requeue_stale({"gpu"}) == {}  # endpoint runs belong to generate workers
        assert kit.requeue_stale({"generate"}) == {"evaluation run": [run.id]}
        assert sent == [("evaluation.endpoint_run", {"run_id": run.id})]
        db.expire_all()
        assert db.get(EvalRun, run.id).status == "queued"
        assert runner.run_endpoint(run.id)["status"] == "succeeded"
        assert runner.run_endpoint(run.id)["status"] == "skipped"  # a duplicate delivery
        assert server.chat_requests - before == 3
    db.expire_all()
    run = db.get(EvalRun, run.id)
    assert (run.status, run.done, run.failed) == ("succeeded", 8, 0)
    assert db.scalar(select(func.count()).select_from(EvalPrediction)
                     .where(EvalPrediction.run_id == run.id)) == 8


def test_items_that_fail_for_good_are_recorded_and_counted(client, db, factories):
    from service.evaluation import service as ev
    from service.models import DatasetVersionItem

    _owner, pid, vid = ready_version(client, db, factories, n=8)
    first = db.scalar(select(DatasetVersionItem).where(DatasetVersionItem.version_id == vid,
                                                       DatasetVersionItem.split == "test")
                      .order_by(DatasetVersionItem.id).limit(1))
    too_long = first.messages[1]["content"]

    def responder(request):  # a 4xx is not retried: the item fails for good
        if request["messages"][-1]["content"] == too_long:
            return Fail(400, "context too long")
        return reference_responder(request)

    with FakeOpenAIServer(responder=responder) as server:
        prov = make_provider(db, pid, server.url)
        run = ev.create_run(db, project_id=pid, dataset_version_id=vid, model_kind="endpoint",
                            provider_id=prov.id, enqueue=False)
        db.commit()
        runner.run_endpoint(run.id)
    db.expire_all()
    run = db.get(EvalRun, run.id)
    preds = list(db.scalars(select(EvalPrediction).where(EvalPrediction.run_id == run.id)))
    failed = [p for p in preds if p.error]
    assert run.status == "succeeded" and (run.done, run.failed, run.total, len(preds)) == (3, 1, 4, 4)
    assert [p.item_id for p in failed] == [first.id]
    assert "HTTP 400" in failed[0].error and failed[0].prediction is None and failed[0].scores == {}
    assert "1 item(s) failed" in run.error and run.aggregate["exact_match"] == 1.0


def test_lost_lease_stops_the_old_owner(client, db, factories):
    from service.evaluation import service as ev
    from service.evaluation.jobs import EVAL_ENDPOINT

    _owner, pid, vid = ready_version(client, db, factories, n=8)
    with FakeOpenAIServer() as server:
        prov = make_provider(db, pid, server.url)
        run = ev.create_run(db, project_id=pid, dataset_version_id=vid, model_kind="endpoint",
                            provider_id=prov.id, enqueue=False)
        db.commit()
    lease = kit.claim(EVAL_ENDPOINT, run.id)
    assert kit.claim(EVAL_ENDPOINT, run.id) is None  # held, heartbeat fresh
    assert lease.renew()
    db.expire_all()
    db.get(EvalRun, run.id).heartbeat_at = utcnow() - timedelta(hours=1)  # stale: taken over
    db.commit()
    lease2 = kit.claim(EVAL_ENDPOINT, run.id)
    assert not lease.renew() and lease.lost
    assert runner.finish(lease)["status"] == "incomplete"
    assert lease2.renew()


def test_request_after_training_creates_the_pair_once(client, db, factories, tmp_path, monkeypatch):
    from service.core import jobs
    from service.evaluation import service as ev

    sent = []
    eager = jobs.send_now

    def send(name, **kw):  # datasets build eagerly; evaluation tasks are only recorded
        if name.startswith("evaluation."):
            sent.append((name, kw))
        else:
            eager(name, **kw)

    monkeypatch.setattr(jobs, "send_now", send)
    owner, pid, vid = ready_version(client, db, factories, n=8)
    job = TrainingJob(project_id=pid, dataset_version_id=vid, base_model="smollm2-135m-instruct",
                      method="lora", status="succeeded", evaluate_after=True,
                      artifacts={"adapter_dir": str(tmp_path)})
    db.add(job)
    db.commit()
    runs = ev.request_after_training(db, training_job_id=job.id)
    db.commit()
    assert [r.name for r in runs] == [f"train-{job.id}-base", f"train-{job.id}-adapter"]
    assert [r.model_kind for r in runs] == ["base", "adapter"]
    assert all(r.training_job_id == job.id and r.split == "test" and r.total == 4 for r in runs)
    assert sent == [("evaluation.run_local", {"run_id": r.id}) for r in runs]
    again = ev.request_after_training(db, training_job_id=job.id)
    db.commit()
    assert [r.id for r in again] == [r.id for r in runs] and len(sent) == 2

    listed = client.get(f"/api/v1/projects/{pid}/eval-runs?training_job_id={job.id}",
                        headers=owner.headers).json()
    assert {r["id"] for r in listed["items"]} == {r.id for r in runs}
    assert listed["compare_url"] == f"/projects/{pid}/evaluation/compare?runs={runs[0].id},{runs[1].id}"

    # no test split: nothing to evaluate, and never an exception into the training worker
    _, pid2, vid2 = ready_version(client, db, factories, n=4, owner=owner,
                                  split={"train": 1.0, "validation": 0.0, "test": 0.0})
    job2 = TrainingJob(project_id=pid2, dataset_version_id=vid2, base_model="smollm2-135m-instruct",
                       method="lora", status="succeeded", artifacts={"adapter_dir": str(tmp_path)})
    db.add(job2)
    db.commit()
    assert ev.request_after_training(db, training_job_id=job2.id) == []
    assert ev.request_after_training(db, training_job_id=424242) == []
    db.commit()
    assert len(sent) == 2
