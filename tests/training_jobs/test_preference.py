# ruff: noqa: F811  (pytest fixtures imported from tests.training_jobs.test_api)
"""Preference training jobs (DPO, ORPO, KTO) through REST: the same runner, lifecycle, events
and cancel as SFT jobs; the reward margin on the training pairs rises; a run can start from an
SFT job's adapter."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from service.models import JobEvent, TrainingJob
from tests.support import worker as w
from tests.support.training import kill_after_checkpoint_then_resume
from tests.support.training import wait_job as _wait
from tests.training_jobs.test_api import HP, no_eager_send, ready_version, tiny_model  # noqa: F401

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.ml]


def preference_version(client, db, factories, n: int = 16, test: float = 0.0):
    from service.models import Project
    from service.preferences import review as preferences_review
    from service.preferences import service as preferences_service

    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "dpo"}, headers=owner.headers).json()["id"]
    project = db.get(Project, pid)
    for i in range(n):
        item = preferences_service.create_item(
            db, project_id=pid, prompt=[{"role": "user", "content": f"Keywords of text {i}?"}],
            candidates=[{"content": f"LoRA;adapter;{i}"}, {"content": "I cannot help with that."}])
        good, bad = preferences_service.candidates_of(db, item.id)
        preferences_review.decide(db, project=project, item=item, annotator_id=owner.user_id,
                                  outcome="preferred", chosen_id=good.id, rejected_id=bad.id)
    db.commit()
    v = client.post(f"/api/v1/projects/{pid}/preference-versions", headers=owner.headers,
                    json={"seed": 1, "split": {"train": 1.0 - test, "validation": 0.0,
                                               "test": test}}).json()
    v = client.get(f"/api/v1/projects/{pid}/preference-versions/{v['id']}", headers=owner.headers).json()
    assert v["status"] == "ready" and v["counts"]["train"] + v["counts"]["test"] == n, v
    return owner, pid, v["id"]


DPO_HP = {"learning_rate": 0.01, "batch_size": 4, "gradient_accumulation": 1, "max_seq_length": 64,
          "lora_r": 8, "logging_steps": 1, "save_steps": 1000}


def _create(client, owner, pid, vid, model, method="dpo", body=None, **hp):
    return client.post(f"/api/v1/projects/{pid}/training-jobs", headers=owner.headers, json={
        "preference_version_id": vid, "base_model": str(model), "method": method,
        "hyperparameters": {**DPO_HP, **hp}, **(body or {})})


def test_validation_names_the_field(client, db, factories, tiny_model):
    owner, pid, vid = preference_version(client, db, factories, n=2)
    url = f"/api/v1/projects/{pid}/training-jobs"
    no_version = client.post(url, headers=owner.headers, json={"method": "dpo", "base_model": str(tiny_model)})
    assert no_version.status_code == 422
    assert no_version.json()["error"]["details"][0]["field"] == "body.preference_version_id"
    bad_beta = _create(client, owner, pid, vid, tiny_model, beta=-1)
    assert bad_beta.status_code == 422
    assert bad_beta.json()["error"]["details"][0]["field"] == "body.hyperparameters.beta"
    bad_sft = _create(client, owner, pid, vid, tiny_model, sft_job_id=12345)
    assert bad_sft.json()["error"]["details"][0]["field"] == "body.hyperparameters.sft_job_id"
    sft_without_version = client.post(url, headers=owner.headers, json={"method": "lora",
                                                                       "base_model": str(tiny_model)})
    assert sft_without_version.json()["error"]["details"][0]["field"] == "body.dataset_version_id"


@pytest.mark.worker
@pytest.mark.skipif(not w.redis_available(), reason="no Redis")
def test_dpo_job_through_worker_margin_rises_and_cancel_within_a_step(
        client, db, factories, tiny_model, no_eager_send, tmp_path):
    owner, pid, vid = preference_version(client, db, factories)
    w.purge()
    with w.running_worker("gpu", name="gpu-dpo", log_path=tmp_path / "gpu.log"):
        resp = _create(client, owner, pid, vid, tiny_model, max_steps=8)
        assert resp.status_code == 201, resp.text
        assert resp.json()["preference_version_id"] == vid and resp.json()["dataset_version_id"] is None
        job = _wait(db, resp.json()["id"], ("succeeded", "failed"))
        assert job.status == "succeeded", (job.error, (tmp_path / "gpu.log").read_text()[-3000:])
        events = client.get(f"/api/v1/projects/{pid}/training-jobs/{job.id}/events",
                            headers=owner.headers).json()["items"]
        metrics = [e for e in events if e["kind"] == "metrics"]
        margins = [e["data"]["rewards"]["margins"] for e in metrics]
        assert [e["step"] for e in metrics] == list(range(1, 9)), [e["message"] for e in events]
        assert margins[-1] > margins[0] + 1.0 and metrics[-1]["loss"] < metrics[0]["loss"], margins
        assert job.artifacts["data"]["reward_margin"]["last"] == margins[-1]
        assert job.artifacts["adapter_dir"] and job.total_steps == 8

        long = _create(client, owner, pid, vid, tiny_model, max_steps=400).json()["id"]
        deadline = time.time() + 120
        while time.time() < deadline:
            db.expire_all()
            if db.get(TrainingJob, long).step >= 2:
                break
            time.sleep(0.2)
        cancel = client.post(f"/api/v1/projects/{pid}/training-jobs/{long}/cancel", headers=owner.headers)
        assert cancel.status_code == 200 and cancel.json()["cancel_requested"]
        at_cancel = cancel.json()["step"]
        job = _wait(db, long, ("cancelled", "failed", "succeeded"), timeout=60)
    assert job.status == "cancelled", job.error
    assert job.step - at_cancel <= 2 and job.step < 400


@pytest.mark.worker
@pytest.mark.skipif(not w.redis_available(), reason="no Redis")
def test_killed_dpo_worker_resumes_from_checkpoint(client, db, factories, tiny_model, no_eager_send,
                                                   tmp_path):
    """SIGKILL the gpu worker after a DPO checkpoint: the sweep re-queues the job, the next
    worker resumes from the checkpoint (not step 0) and the job succeeds."""
    owner, pid, vid = preference_version(client, db, factories, n=16)

    def create() -> int:
        resp = _create(client, owner, pid, vid, tiny_model, max_steps=40, save_steps=3)
        assert resp.status_code == 201, resp.text
        return resp.json()["id"]

    job, killed_at = kill_after_checkpoint_then_resume(db, create, tmp_path, name="gpu-dpo")
    assert killed_at < 40 and job.step == 40
    events = list(db.scalars(select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id)))
    resumed = [e for e in events if (e.data or {}).get("kind") == "resumed"]
    assert resumed and resumed[0].data["step"] >= 3, [e.message for e in events]
    assert job.artifacts["resumed_from"].endswith(f"checkpoint-{resumed[0].data['step']}")
    # the second attempt trained only the steps after the checkpoint, with reward metrics
    after = [e for e in events if e.kind == "metrics" and e.id > resumed[0].id]
    assert after and min(e.step for e in after) > resumed[0].data["step"]
    assert all("margins" in e.data["rewards"] for e in after)


@pytest.mark.parametrize("method", ["orpo", "kto"])
def test_orpo_and_kto_jobs_run(client, db, factories, tiny_model, method):
    owner, pid, vid = preference_version(client, db, factories, n=8)
    resp = _create(client, owner, pid, vid, tiny_model, method=method, max_steps=3)  # eager: runs now
    assert resp.status_code == 201, resp.text
    job = db.get(TrainingJob, resp.json()["id"])
    assert job.status == "succeeded", job.error
    assert job.artifacts["data"]["reward_margin"] is not None


def test_dpo_from_an_sft_adapter(client, db, factories, tiny_model):
    owner, pid, dvid = ready_version(client, db, factories, n=8)
    sft = client.post(f"/api/v1/projects/{pid}/training-jobs", headers=owner.headers, json={
        "dataset_version_id": dvid, "base_model": str(tiny_model), "method": "lora",
        "hyperparameters": {**HP, "max_steps": 2}}).json()
    assert db.get(TrainingJob, sft["id"]).status == "succeeded"
    _, _, vid = preference_version(client, db, factories, n=4)
    # the SFT job belongs to another project: refused
    other = _create(client, owner, pid, vid, tiny_model, sft_job_id=sft["id"])
    assert other.status_code == 422
    from service.models import PreferenceVersion

    db.get(PreferenceVersion, vid).project_id = pid  # move the version next to the SFT job
    db.commit()
    resp = _create(client, owner, pid, vid, tiny_model, sft_job_id=sft["id"], max_steps=2,
                   body={"merge_after": True})
    assert resp.status_code == 201, resp.text
    job = db.get(TrainingJob, resp.json()["id"])
    assert job.status == "succeeded", job.error
    assert job.artifacts["data"]["init_adapter"] == db.get(TrainingJob, sft["id"]).artifacts["adapter_dir"]
    # merged: base + the SFT adapter + the DPO adapter (base + the DPO adapter alone is not it)
    from pathlib import Path

    assert (Path(job.artifacts["merged_dir"]) / "config.json").is_file()
    assert set(job.artifacts["serve_commands"]) == {"merged"}
    # its reward accuracy is against the SFT model it started from (base + SFT adapter)
    run = client.post(f"/api/v1/projects/{pid}/preference-evals", headers=owner.headers, json={
        "preference_version_id": vid, "kind": "reward_accuracy", "split": "train",
        "models": {"policy": {"kind": "training_job", "training_job_id": job.id}}})
    assert run.status_code == 201, run.text
    assert run.json()["models"]["reference"]["training_job_id"] == sft["id"]
    from service.models import PreferenceEvalRun

    run = db.get(PreferenceEvalRun, run.json()["id"])
    assert run.status == "succeeded" and run.aggregate["n"] == 4, run.error


def test_evaluate_after_reward_accuracy_and_local_win_rate(client, db, factories, tiny_model):
    """A DPO job with evaluate_after and merge_after: its reward accuracy against its start
    model on the version's test pairs is requested and run; then the judged win rate of the
    job's model over its base, both answering locally."""
    from service.models import PreferenceEvalRun
    from tests.support.openai_server import FakeOpenAIServer

    owner, pid, vid = preference_version(client, db, factories, n=24, test=0.25)
    no_test = preference_version(client, db, factories, n=4)[2]
    refused = client.post(f"/api/v1/projects/{pid}/training-jobs", headers=owner.headers, json={
        "preference_version_id": no_test, "base_model": str(tiny_model), "method": "dpo",
        "evaluate_after": True})
    assert refused.json()["error"]["details"][0]["field"] in ("body.evaluate_after",
                                                              "body.preference_version_id")
    resp = _create(client, owner, pid, vid, tiny_model, max_steps=8,
                   body={"evaluate_after": True, "merge_after": True})
    assert resp.status_code == 201, resp.text
    job = db.get(TrainingJob, resp.json()["id"])
    assert job.status == "succeeded", job.error
    assert job.artifacts["merged_dir"] and set(job.artifacts["serve_commands"]) == {"lora", "merged"}
    runs = client.get(f"/api/v1/projects/{pid}/preference-evals?training_job_id={job.id}",
                      headers=owner.headers).json()["items"]
    assert [r["name"] for r in runs] == [f"train-{job.id}-reward-accuracy"]
    run = runs[0]
    assert run["status"] == "succeeded" and run["kind"] == "reward_accuracy", run
    assert run["models"]["reference"] == {"kind": "base", "base_model": str(tiny_model),
                                          "label": str(tiny_model)}
    agg = run["aggregate"]
    assert agg["n"] == run["total"] == db.get(PreferenceEvalRun, run["id"]).total > 0
    assert run["settings"]["beta"] == 0.1
    # trained on pairs like these, the policy ranks held-out chosen answers first
    assert agg["reward_accuracy"] == 1.0 and agg["reward_margin"] > 0, agg
    assert agg["reward_accuracy_ci_low"] <= agg["reward_accuracy"] <= agg["reward_accuracy_ci_high"]
    items = client.get(f"/api/v1/projects/{pid}/preference-evals/{run['id']}/items",
                       headers=owner.headers).json()["items"]
    s = items[0]["scores"]
    assert s["chosen_reward"] == pytest.approx(0.1 * (s["chosen_logp"] - s["ref_chosen_logp"]))
    # the base against itself: every reward is 0, no pair is ranked (TRL's strict accuracy)
    same = client.post(f"/api/v1/projects/{pid}/preference-evals", headers=owner.headers, json={
        "preference_version_id": vid, "kind": "reward_accuracy",
        "models": {"policy": {"kind": "base", "base_model": str(tiny_model)},
                   "reference": {"kind": "base", "base_model": str(tiny_model)}}}).json()
    same = db.get(PreferenceEvalRun, same["id"])
    assert same.status == "succeeded" and same.aggregate["reward_accuracy"] == 0.0
    assert same.aggregate["reward_margin"] == 0.0

    with FakeOpenAIServer(responder=lambda req: "Verdict: A") as server:
        judge = client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers, json={
            "name": "judge", "base_url": server.url, "model": "judge"}).json()["id"]
        win = client.post(f"/api/v1/projects/{pid}/preference-evals", headers=owner.headers, json={
            "preference_version_id": vid, "kind": "win_rate", "judge_provider_id": judge,
            "settings": {"max_tokens": 8},
            "models": {"candidate": {"kind": "training_job", "training_job_id": job.id},
                       "baseline": {"kind": "base", "base_model": str(tiny_model)}}})
        assert win.status_code == 201 and win.json()["queue"] is None, win.text  # gpu
        win = db.get(PreferenceEvalRun, win.json()["id"])
    assert win.status == "succeeded", win.error
    assert win.aggregate["win_rate"] == 0.5 and win.aggregate["position_consistency"] == 0.0
    page = client.get(f"/projects/{pid}/evaluation/preferences/{run['id']}", headers=owner.headers)
    assert page.status_code == 200 and "reward accuracy: 1.000" in page.text


def test_a_stale_export_under_a_reused_version_id_is_rewritten(client, db, factories):
    """Exports are folders named by version id: one left by another version with that id (a
    database recreated under a kept data folder) is rewritten before training, never used."""
    import json

    from service.preferences import export as preferences_export
    from workers.training import preference

    vid = preference_version(client, db, factories, n=4)[2]
    folder = preferences_export.export_dir(vid, "trl")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(
        {"version": {"id": vid, "built_at": "2020-01-01T00:00:00+00:00"}}))
    (folder / "train.jsonl").write_text('{"prompt": "another version"}\n')
    job = TrainingJob(method="dpo", preference_version_id=vid)
    out = preference.ensure_export(job)
    lines = (out / "train.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all("Keywords of text" in line for line in lines)
    written = (out / "manifest.json").stat().st_mtime_ns
    assert preference.ensure_export(job) == out  # this version's own: kept as it is
    assert (out / "manifest.json").stat().st_mtime_ns == written
