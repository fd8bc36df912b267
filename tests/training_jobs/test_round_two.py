"""Round two: a succeeded training job's model becomes a provider of its project, drafts the next
samples in the worker and is evaluated like any other provider (tasks run eagerly here)."""
from __future__ import annotations

import pytest

from service.models import LLMProvider, TrainingJob
from tests.generation.test_engine import make_chunks
from tests.training_jobs.test_api import HP, ready_version

pytest.importorskip("torch")
pytestmark = [pytest.mark.ml]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from workers.training.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _trained(client, db, factories, tiny_model, merge_after=False):
    owner, pid, vid = ready_version(client, db, factories)
    resp = client.post(f"/api/v1/projects/{pid}/training-jobs", headers=owner.headers, json={
        "dataset_version_id": vid, "base_model": str(tiny_model), "method": "lora",
        "hyperparameters": {**HP, "epochs": 1}, "merge_after": merge_after})
    assert resp.status_code == 201, resp.text
    job = client.get(f"/api/v1/projects/{pid}/training-jobs/{resp.json()['id']}",
                     headers=owner.headers).json()
    assert job["status"] == "succeeded", job
    return owner, pid, vid, job


def test_trained_model_drafts_samples_and_is_evaluated(client, db, factories, tiny_model):
    owner, pid, vid, job = _trained(client, db, factories, tiny_model)
    api, h = f"/api/v1/projects/{pid}", owner.headers

    resp = client.post(f"{api}/training-jobs/{job['id']}/provider", headers=h)
    assert resp.status_code == 201, resp.text
    provider = resp.json()
    assert provider["kind"] == "local" and provider["training_job_id"] == job["id"]
    assert provider["model"] == job["artifacts"]["adapter_dir"]  # no merged folder: base + adapter
    again = client.post(f"{api}/training-jobs/{job['id']}/provider", headers=h)
    assert again.status_code == 200 and again.json()["id"] == provider["id"]
    assert provider["id"] in [p["id"] for p in client.get(f"{api}/providers", headers=h).json()["items"]]
    assert client.post(f"{api}/providers/{provider['id']}/test", headers=h).json()["ok"]

    # the next round's drafts come from the fine-tuned model, in the worker
    make_chunks(db, pid, 2)
    tpl = client.post(f"{api}/templates", headers=h, json={
        "name": "kw", "kind": "custom", "lang": "zh", "text": "抽取出下文中的关键词：\n{{ text }}",
        "parser": {"kind": "text"}}).json()
    gen = client.post(f"{api}/generation-jobs", headers=h, json={
        "template_id": tpl["id"], "provider_id": provider["id"],
        "params": {"sampling": {"max_tokens": 8}, "keep_truncated": True}}).json()
    gen = client.get(f"{api}/generation-jobs/{gen['id']}", headers=h).json()
    assert gen["status"] == "succeeded" and gen["done_units"] == 2, gen
    assert gen["queue"] == "gpu"
    drafts = client.get(f"{api}/samples", headers=h,
                        params={"generation_job_id": gen["id"]}).json()["items"]
    assert len(drafts) == 2
    for s in drafts:
        assert s["provenance"]["generation"]["provider_id"] == provider["id"]
        assert s["provenance"]["generation"]["model"] == job["artifacts"]["adapter_dir"]

    # ... and it is evaluated as a provider: the run is the job's adapter, run in the worker
    run = client.post(f"{api}/eval-runs", headers=h, json={
        "dataset_version_id": vid, "model_kind": "endpoint", "provider_id": provider["id"],
        "generation": {"max_tokens": 8}, "metrics": ["exact_match", "char_f1"]})
    assert run.status_code == 201, run.text
    run = client.get(f"{api}/eval-runs/{run.json()['id']}", headers=h).json()
    assert (run["model_kind"], run["training_job_id"], run["provider_id"]) == (
        "adapter", job["id"], provider["id"])
    assert run["status"] == "succeeded" and run["done"] == run["total"] > 0, run
    base = client.post(f"{api}/eval-runs", headers=h, json={
        "dataset_version_id": vid, "model_kind": "base", "base_model": str(tiny_model),
        "generation": {"max_tokens": 8}, "metrics": ["exact_match", "char_f1"]}).json()
    cmp = client.get(f"{api}/eval-compare", headers=h,
                     params={"runs": f"{base['id']},{run['id']}"}).json()
    tuned = next(r for r in cmp["runs"] if r["id"] == run["id"])
    assert f"local provider #{provider['id']}" in tuned["model"]
    assert "char_f1" in cmp["comparisons"][0]["metrics"]

    # the provider drafted samples: it stays until those jobs go (409, as for any provider)
    assert client.delete(f"{api}/providers/{provider['id']}", headers=h).status_code == 409


def test_merged_model_is_the_provider_and_unfinished_jobs_have_none(client, db, factories,
                                                                     tiny_model):
    owner, pid, vid, job = _trained(client, db, factories, tiny_model, merge_after=True)
    api, h = f"/api/v1/projects/{pid}", owner.headers
    provider = client.post(f"{api}/training-jobs/{job['id']}/provider", headers=h).json()
    assert provider["model"] == job["artifacts"]["merged_dir"]

    queued = TrainingJob(project_id=pid, dataset_version_id=vid, base_model=str(tiny_model),
                         method="lora", hyperparameters={}, status="queued", artifacts={})
    db.add(queued)
    db.commit()
    resp = client.post(f"{api}/training-jobs/{queued.id}/provider", headers=h)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "bad_state"
    assert db.query(LLMProvider).filter_by(training_job_id=queued.id).count() == 0
    other = factories.make_actor(db)  # not a member: the job is not found
    assert client.post(f"{api}/training-jobs/{job['id']}/provider",
                       headers=other.headers).status_code == 404


def test_split_adapter(tmp_path):
    import json

    from workers.training.models import split_adapter

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/m/base"}))
    assert split_adapter(str(adapter)) == ("/m/base", str(adapter.resolve()))
    assert split_adapter("smollm2-135m-instruct") == ("smollm2-135m-instruct", None)
    (adapter / "config.json").write_text("{}")  # a full model folder is a base, not an adapter
    assert split_adapter(str(adapter)) == (str(adapter), None)
