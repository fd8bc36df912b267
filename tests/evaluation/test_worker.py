"""Evaluation on real Celery workers (Redis): a tiny local model before/after a real training
job on the gpu queue (CPU here), and an OpenAI-compatible endpoint surviving 429/500 and a
SIGKILLed worker without losing or duplicating predictions."""
from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import func, select

from service.evaluation.pages import fmt, fmt_delta
from service.models import EvalPrediction, EvalRun, TrainingJob
from tests.evaluation.test_service import make_provider, ready_version, reference_responder
from tests.support import worker as w
from tests.support.openai_server import Fail, FakeOpenAIServer, rate_limited

needs_redis = pytest.mark.skipif(not w.redis_available(), reason="no Redis")


@pytest.fixture
def no_eager_send(monkeypatch):
    """Training and evaluation tasks go through Redis to the real worker, not this process."""
    w.route_to_worker(monkeypatch, "training.", "evaluation.")


@pytest.mark.ml
@pytest.mark.worker
@needs_redis
def test_base_vs_adapter_after_a_real_training_job(client, db, factories, no_eager_send, tmp_path):
    pytest.importorskip("torch")
    from workers.training.models import make_tiny_model

    tiny = make_tiny_model(tmp_path / "tiny")
    owner, pid, vid = ready_version(client, db, factories, n=16)
    log = tmp_path / "gpu.log"
    w.purge()
    with w.running_worker("gpu", name="gpu-eval", log_path=log):
        resp = client.post(f"/api/v1/projects/{pid}/training-jobs", headers=owner.headers, json={
            "dataset_version_id": vid, "base_model": str(tiny), "method": "lora",
            "evaluate_after": True, "hyperparameters": {
                "epochs": 2, "learning_rate": 0.02, "batch_size": 4, "max_seq_length": 256,
                "lora_r": 8, "logging_steps": 1, "save_steps": 1000}})
        assert resp.status_code == 201, resp.text
        job_id = resp.json()["id"]
        job = w.wait_for(db, lambda: (j := db.get(TrainingJob, job_id)).status in ("succeeded", "failed") and j,
                    240, "training", log)
        assert job.status == "succeeded", job.error
        w.wait_for(db, lambda: (rs := list(db.scalars(select(EvalRun).where(
            EvalRun.training_job_id == job_id)))) and len(rs) == 2
            and all(r.status in ("succeeded", "failed") for r in rs) and rs, 180, "eval runs", log)
    listed = client.get(f"/api/v1/projects/{pid}/eval-runs?training_job_id={job_id}",
                        headers=owner.headers).json()
    by_name = {r["name"]: r for r in listed["items"]}
    base, adapter = by_name[f"train-{job_id}-base"], by_name[f"train-{job_id}-adapter"]
    for run in (base, adapter):
        assert run["status"] == "succeeded", run["error"]
        assert run["done"] == run["total"] == 8 and run["failed"] == 0
        assert set(run["aggregate"]) >= {"exact_match", "bleu-4", "rouge-l", "char_f1"}
    assert (base["model_kind"], adapter["model_kind"]) == ("base", "adapter")
    assert listed["compare_url"] == f"/projects/{pid}/evaluation/compare?runs={base['id']},{adapter['id']}"
    preds = {rid: {p.item_id: p for p in db.scalars(select(EvalPrediction).where(EvalPrediction.run_id == rid))}
             for rid in (base["id"], adapter["id"])}
    assert preds[base["id"]].keys() == preds[adapter["id"]].keys()
    assert all(p.completion_tokens > 0 and p.prompt_tokens > 0 for p in preds[base["id"]].values())
    # the adapter is really applied: greedy outputs of the fine-tuned model differ
    assert any(preds[base["id"]][k].prediction != preds[adapter["id"]][k].prediction
               for k in preds[base["id"]])

    report = client.get(f"/api/v1/projects/{pid}/eval-compare?runs={base['id']},{adapter['id']}",
                        headers=owner.headers).json()
    html = client.get(listed["compare_url"], headers=owner.headers)
    assert html.status_code == 200
    text = html.text
    assert len(report["per_sample"]) == 8
    for metric in report["metrics"]:
        e = report["comparisons"][0]["metrics"][metric]
        assert e["ci_low"] <= e["delta"] + 1e-9 and e["delta"] <= e["ci_high"] + 1e-9
        for value in (fmt(e["baseline_mean"]), fmt(e["mean"]), fmt_delta(e["delta"]),
                      f"[{fmt_delta(e['ci_low'])}, {fmt_delta(e['ci_high'])}]"):
            assert value in text, (metric, value)
    for row in report["per_sample"]:
        assert f'data-sample="{row["sample"]}"' in text
        assert fmt_delta(row["delta"]) in text
    assert text.count("<svg") == len(report["metrics"])
    page = client.get(f"/projects/{pid}/evaluation", headers=owner.headers).text
    assert listed["compare_url"].replace("&", "&amp;") in page  # the after-training pair link


@pytest.mark.worker
@needs_redis
def test_endpoint_run_survives_errors_and_a_killed_worker(client, db, factories, tmp_path):
    from service.evaluation import service as ev

    _owner, pid, vid = ready_version(client, db, factories, n=40,
                                    split={"train": 0.25, "validation": 0.0, "test": 0.75})
    env = {"ANNOTUNE_JOB_STALE_SECONDS": "2"}
    with FakeOpenAIServer(latency=0.15, responder=reference_responder) as server:
        server.script(rate_limited(0), Fail(500), Fail(503), rate_limited(0))
        prov = make_provider(db, pid, server.url, max_concurrency=2, timeout_s=2)
        run = ev.create_run(db, project_id=pid, dataset_version_id=vid, model_kind="endpoint",
                            provider_id=prov.id, enqueue=False, metrics=["exact_match", "char_f1"])
        db.commit()
        run_id, total = run.id, run.total
        assert total == 30
        w.purge()
        with w.running_worker("generate", name="eval-a", log_path=tmp_path / "a.log", **env) as proc:
            w.client().send_task("evaluation.endpoint_run", kwargs={"run_id": run_id}, queue="generate")
            w.wait_for(db, lambda: db.get(EvalRun, run_id).done >= 6, 60, "first predictions",
                  tmp_path / "a.log")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        db.expire_all()
        killed_at = db.get(EvalRun, run_id)
        assert killed_at.status == "running" and 0 < killed_at.done < total
        with w.running_worker("generate", name="eval-b", log_path=tmp_path / "b.log", **env):
            run = w.wait_for(db, lambda: (r := db.get(EvalRun, run_id)).status in ("succeeded", "failed") and r,
                        90, "the resumed run", tmp_path / "b.log")
    assert (run.status, run.done, run.failed) == ("succeeded", total, 0), run.error
    item_ids = list(db.scalars(select(EvalPrediction.item_id).where(EvalPrediction.run_id == run_id)))
    assert len(item_ids) == len(set(item_ids)) == total
    assert run.aggregate["exact_match"] == 1.0  # every answer arrived, none twice
    assert db.scalar(select(func.count()).select_from(EvalPrediction)
                     .where(EvalPrediction.error.is_not(None))) == 0
    assert server.chat_requests >= total + 4


@pytest.mark.worker
@needs_redis
def test_cancel_an_endpoint_run_on_a_real_worker(client, db, factories, no_eager_send, tmp_path):
    owner, pid, vid = ready_version(client, db, factories, n=40,
                                    split={"train": 0.25, "validation": 0.0, "test": 0.75})
    log = tmp_path / "gen.log"
    w.purge()
    with FakeOpenAIServer(latency=0.3, responder=reference_responder) as server, \
            w.running_worker("generate", name="eval-cancel", log_path=log):
        prov = make_provider(db, pid, server.url, max_concurrency=2)
        resp = client.post(f"/api/v1/projects/{pid}/eval-runs", headers=owner.headers, json={
            "dataset_version_id": vid, "model_kind": "endpoint", "provider_id": prov.id,
            "metrics": ["exact_match", "char_f1"]})
        assert resp.status_code == 201, resp.text
        run_id = resp.json()["id"]
        w.wait_for(db, lambda: db.get(EvalRun, run_id).done >= 4, 60, "first predictions", log)
        cancel = client.post(f"/api/v1/projects/{pid}/eval-runs/{run_id}/cancel", headers=owner.headers)
        assert cancel.status_code == 200 and cancel.json()["cancel_requested"], cancel.text
        run = w.wait_for(db, lambda: (r := db.get(EvalRun, run_id)).status != "running" and r, 30,
                    "the cancelled run", log)
    preds = list(db.scalars(select(EvalPrediction).where(EvalPrediction.run_id == run_id)))
    assert run.status == "cancelled", run.error
    assert run.sent_at is not None and run.attempts == 1
    assert 4 <= run.done == len(preds) < run.total == 30
    assert run.aggregate["exact_match"] == 1.0 and set(run.aggregate) == {"exact_match", "char_f1"}
    page = client.get(f"/projects/{pid}/evaluation/runs/{run_id}", headers=owner.headers)
    assert page.status_code == 200 and 'data-testid="cancel-run"' not in page.text
