"""Training jobs through the REST API and a real Celery worker on the gpu queue (CPU here)."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from service.models import JobEvent, TrainingJob
from tests.support import worker as w
from tests.support.training import kill_after_checkpoint_then_resume
from tests.support.training import wait_job as _wait

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.ml]

KEYWORD_ROWS = [("抽取出下文中的关键词：\n甲状腺微小癌的超声特点", "甲状腺微小癌;超声"),
                ("抽取出下文中的关键词：\n低秩适配的大语言模型微调", "低秩适配;微调"),
                ("Extract the keywords:\nQLoRA trains adapters on a 4-bit base", "QLoRA;adapters"),
                ("Extract the keywords:\nvLLM serves merged models fast", "vLLM;serving")]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from workers.training.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def ready_version(client, db, factories, n: int = 24):
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "train"}, headers=owner.headers).json()["id"]
    for i in range(n):
        user, answer = KEYWORD_ROWS[i % len(KEYWORD_ROWS)]
        client.post(f"/api/v1/projects/{pid}/samples", headers=owner.headers, json={
            "status": "accepted", "messages": [{"role": "user", "content": f"{user} #{i}"},
                                               {"role": "assistant", "content": answer}]})
    ds = client.post(f"/api/v1/projects/{pid}/datasets", headers=owner.headers, json={"name": "kw"}).json()
    v = client.post(f"/api/v1/projects/{pid}/datasets/{ds['id']}/versions", headers=owner.headers,
                    json={"split": {"train": 0.75, "validation": 0.125, "test": 0.125}, "seed": 7}).json()
    v = client.get(f"/api/v1/projects/{pid}/datasets/{ds['id']}/versions/{v['id']}", headers=owner.headers).json()
    assert v["status"] == "ready", v
    return owner, pid, v["id"]


HP = {"epochs": 3, "learning_rate": 0.01, "batch_size": 4, "max_seq_length": 64, "lora_r": 8,
      "logging_steps": 1, "save_steps": 2}


def test_validation_names_the_field(client, db, factories, tiny_model):
    owner, pid, vid = ready_version(client, db, factories, n=8)
    url = f"/api/v1/projects/{pid}/training-jobs"
    bad_model = client.post(url, headers=owner.headers, json={"dataset_version_id": vid,
                                                              "base_model": "no/such-model"})
    assert bad_model.status_code == 422
    assert bad_model.json()["error"]["details"][0]["field"] == "body.base_model"
    bad_hp = client.post(url, headers=owner.headers, json={
        "dataset_version_id": vid, "base_model": str(tiny_model), "hyperparameters": {"learning_rate": -1}})
    assert bad_hp.status_code == 422
    assert bad_hp.json()["error"]["details"][0]["field"] == "body.hyperparameters.learning_rate"
    bad_version = client.post(url, headers=owner.headers, json={"dataset_version_id": 99999,
                                                                "base_model": str(tiny_model)})
    assert bad_version.status_code == 422
    assert bad_version.json()["error"]["details"][0]["field"] == "body.dataset_version_id"


def _create(client, owner, pid, vid, tiny_model, method, **extra):
    resp = client.post(f"/api/v1/projects/{pid}/training-jobs", headers=owner.headers, json={
        "dataset_version_id": vid, "base_model": str(tiny_model), "method": method,
        "hyperparameters": {**HP, **extra}})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


@pytest.fixture
def no_eager_send(monkeypatch):
    """Jobs are queued through the API but run by the real worker, not in the test process."""
    w.route_to_worker(monkeypatch, "training.")


@pytest.mark.worker
@pytest.mark.skipif(not w.redis_available(), reason="no Redis")
@pytest.mark.parametrize("method", ["qlora", "lora"])
def test_job_trains_through_real_worker(client, db, factories, tiny_model, method, no_eager_send, tmp_path):
    owner, pid, vid = ready_version(client, db, factories)
    w.purge()
    with w.running_worker("gpu", name=f"gpu-{method}", log_path=tmp_path / "gpu.log"):
        job_id = _create(client, owner, pid, vid, tiny_model, method)
        job = _wait(db, job_id, ("succeeded", "failed"))
    assert job.status == "succeeded", (job.error, (tmp_path / "gpu.log").read_text()[-3000:])
    events = client.get(f"/api/v1/projects/{pid}/training-jobs/{job_id}/events",
                        headers=owner.headers).json()["items"]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids)
    losses = [e["loss"] for e in events if e["kind"] == "metrics"]
    steps = [e["step"] for e in events if e["kind"] == "metrics"]
    assert steps == sorted(steps) and len(losses) >= 3, [(e["kind"], e["message"], e["step"], e["loss"]) for e in events]
    assert losses[-1] < losses[0]
    if method == "qlora":
        assert any("4-bit" in e["message"] or "nf4" in e["message"].lower() or "fallback" in e["data"].get("kind", "")
                   for e in events), [e["message"] for e in events]
    page = client.get(f"/api/v1/projects/{pid}/training-jobs/{job_id}/events?after={ids[2]}",
                      headers=owner.headers).json()
    assert [e["id"] for e in page["items"]] == ids[3:]
    art = client.get(f"/api/v1/projects/{pid}/training-jobs/{job_id}/artifacts/adapter_config.json",
                     headers=owner.headers)
    assert art.status_code == 200 and art.json()["r"] == 8
    detail = client.get(f"/api/v1/projects/{pid}/training-jobs/{job_id}", headers=owner.headers).json()
    assert "--enable-lora" in detail["artifacts"]["serve_commands"]["lora"]
    assert detail["artifacts"]["manifest_sha256"]

    # the adapter loads back with peft and changes the model's output
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    ids_in = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        before = base(ids_in).logits
        tuned = PeftModel.from_pretrained(base, detail["artifacts"]["adapter_dir"])(ids_in).logits
    assert not torch.allclose(before, tuned)


@pytest.mark.worker
@pytest.mark.skipif(not w.redis_available(), reason="no Redis")
def test_cancel_stops_within_a_few_steps(client, db, factories, tiny_model, no_eager_send, tmp_path):
    owner, pid, vid = ready_version(client, db, factories, n=40)
    w.purge()
    with w.running_worker("gpu", name="gpu-cancel", log_path=tmp_path / "gpu.log"):
        job_id = _create(client, owner, pid, vid, tiny_model, "lora", epochs=50, save_steps=1000)
        deadline = time.time() + 120
        while time.time() < deadline:
            db.expire_all()
            if db.get(TrainingJob, job_id).step >= 2:
                break
            time.sleep(0.2)
        resp = client.post(f"/api/v1/projects/{pid}/training-jobs/{job_id}/cancel",
                           headers=owner.headers)
        assert resp.status_code == 200 and resp.json()["cancel_requested"]
        step_at_cancel = resp.json()["step"]
        job = _wait(db, job_id, ("cancelled", "failed", "succeeded"), timeout=60)
    assert job.status == "cancelled"
    assert job.step - step_at_cancel <= 5
    assert job.total_steps and job.step < job.total_steps


@pytest.mark.worker
@pytest.mark.skipif(not w.redis_available(), reason="no Redis")
def test_killed_worker_resumes_from_checkpoint(client, db, factories, tiny_model, no_eager_send, tmp_path):
    owner, pid, vid = ready_version(client, db, factories, n=40)
    job, _ = kill_after_checkpoint_then_resume(
        db, lambda: _create(client, owner, pid, vid, tiny_model, "lora", epochs=6, save_steps=3),
        tmp_path)
    messages = [e.message for e in db.scalars(select(JobEvent).where(JobEvent.job_id == job.id)
                                               .order_by(JobEvent.id))]
    assert any("resum" in m.lower() for m in messages), messages
    assert job.artifacts["resumed_from"]
