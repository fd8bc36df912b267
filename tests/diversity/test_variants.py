"""Genre–audience variants: a provider proposes pairs per document, a lead edits them, and a
generation job fans each chunk out over the chosen pairs (one unit per (chunk, pair), the pair
in the unit key and in the samples' provenance); a SIGKILL mid-job and a new worker leave no
duplicate unit or sample."""
from __future__ import annotations

import os
import re
import signal

import pytest
from sqlalchemy import func, select

from service.models import Document, GenerationJob, GenerationUnit, PromptTemplate, Sample
from tests.diversity.conftest import make_documents, make_provider, prompt_of, responder
from tests.support import worker as w
from tests.support.openai_server import FakeOpenAIServer

needs_redis = pytest.mark.skipif(not w.redis_available(), reason="no Redis")


def ga_responder(request: dict) -> str:
    """Proposals as ``responder``; a GA question prompt asks one question in the pair's voice,
    an answer prompt gets a short answer."""
    text = prompt_of(request)
    if "- audience: " in text:
        genre = re.search(r"- genre: (.+)", text).group(1)
        audience = re.search(r"- audience: (.+)", text).group(1)
        part = re.search(r"Document \d+ part \d+", text).group(0)
        return f"1. As a {audience} ({genre}): what does {part} say?"
    if text.startswith("Answer the question"):
        return "It says LoRA trains low-rank matrices."
    return responder(request)


def _template(client, owner, pid, name: str) -> int:
    templates = client.get(f"/api/v1/projects/{pid}/templates", headers=owner.headers).json()["items"]
    return next(t["id"] for t in templates if t["name"] == name)


def test_pairs_proposed_edited_and_each_chunk_fanned_out_over_the_chosen_pairs(client, db, project):
    owner, pid = project
    api = f"/api/v1/projects/{pid}"
    make_documents(db, pid, docs=2, chunks=3)
    with FakeOpenAIServer(responder=ga_responder) as server:
        prov = make_provider(client, owner, pid, server.url)
        job = client.post(f"{api}/ga-pairs/propose", headers=owner.headers,
                          json={"provider_id": prov, "n": 2}).json()
        job = client.get(f"{api}/diversity-jobs/{job['id']}", headers=owner.headers).json()
        assert job["status"] == "succeeded" and job["result"]["pairs"] == 4, job
        assert "Document: guide0.md" in server.requests[0]["json"]["messages"][0]["content"]
        pairs = client.get(f"{api}/ga-pairs", headers=owner.headers).json()["items"]
        assert len(pairs) == 4
        doc0, doc1 = sorted({p["document_id"] for p in pairs})
        first0, second0 = [p for p in pairs if p["document_id"] == doc0]
        first1, second1 = [p for p in pairs if p["document_id"] == doc1]
        # a lead edits them: change, delete, add; bad input names the field
        r = client.patch(f"{api}/ga-pairs/{second0['id']}", headers=owner.headers,
                         json={"audience": "customer", "genre": "product FAQ"})
        assert r.status_code == 200 and r.json()["audience"] == "customer"
        assert client.delete(f"{api}/ga-pairs/{second1['id']}",
                             headers=owner.headers).status_code == 204
        bad = client.post(f"{api}/ga-pairs", headers=owner.headers,
                          json={"document_id": doc1, "genre": "  ", "audience": "x"})
        assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "body.genre"
        added = client.post(f"{api}/ga-pairs", headers=owner.headers,
                            json={"document_id": doc1, "genre": "lecture", "audience": "teacher"})
        assert added.status_code == 201
        chosen = [first0["id"], second0["id"], added.json()["id"]]  # not first1

        tid = _template(client, owner, pid, "question_ga.en")
        body = {"template_id": tid, "provider_id": prov, "params": {"n": 1, "ga_pair_ids": chosen}}
        plan = client.post(f"{api}/generation-jobs/plan", headers=owner.headers, json=body)
        assert plan.status_code == 200 and plan.json()["units"] == 9, plan.text
        job = client.post(f"{api}/generation-jobs", headers=owner.headers, json=body)
        assert job.status_code in (200, 201, 202), job.text
        job = client.get(f"{api}/generation-jobs/{job.json()['id']}", headers=owner.headers).json()
        assert job["status"] == "succeeded" and job["total_units"] == job["done_units"] == 9, job
        asked = [prompt_of(r["json"]) for r in server.requests if "- audience: " in prompt_of(r["json"])]
        assert sum("- audience: customer" in p for p in asked) == 3
        assert not any("- audience: " + first1["audience"] in p and "Document 1" in p for p in asked)
        # the same job again: no unit is repeated
        again = client.post(f"{api}/generation-jobs", headers=owner.headers, json=body).json()
        assert again["total_units"] == 0
        plan = client.post(f"{api}/generation-jobs/plan", headers=owner.headers, json=body).json()
        assert plan["units"] == 0 and plan["skipped_units"] == 9
        bad = client.post(f"{api}/generation-jobs", headers=owner.headers, json={
            **body, "params": {"ga_pair_ids": [987654]}})
        assert bad.status_code == 422
        assert bad.json()["error"]["details"][0]["field"] == "body.params.ga_pair_ids"
        step = client.post(f"{api}/generation-jobs", headers=owner.headers, json={
            "template_id": _template(client, owner, pid, "domain_tree.en"), "provider_id": prov})
        assert step.status_code == 422  # a diversity step is not a generation template
    units = db.scalars(select(GenerationUnit).where(GenerationUnit.job_id == job["id"])).all()
    assert len(units) == len({(u.chunk_id, u.ga_pair_id) for u in units}) == 9
    assert all(f":g{u.ga_pair_id}:" in u.key for u in units)
    samples = db.scalars(select(Sample).where(Sample.generation_job_id == job["id"])).all()
    assert len(samples) == 9
    pair = samples[0].provenance["generation"]["ga_pair"]
    assert set(pair) == {"id", "genre", "audience"} and pair["id"] in chosen
    by_pair = {s.provenance["generation"]["ga_pair"]["id"] for s in samples}
    assert by_pair == set(chosen)
    customer = [s for s in samples if s.provenance["generation"]["ga_pair"]["id"] == second0["id"]]
    assert all("As a customer (product FAQ)" in s.messages[0]["content"] for s in customer)


@pytest.mark.worker
@needs_redis
def test_fan_out_sigkill_mid_job_then_a_new_worker_finishes_without_duplicates(db, project,
                                                                              tmp_path):
    from service.diversity import service as diversity_service
    from service.generation import service as gs

    _owner, pid = project
    make_documents(db, pid, docs=2, chunks=6)
    env = {"ANNOTUNE_GENERATION_LEASE_SECONDS": "3", "ANNOTUNE_JOB_STALE_SECONDS": "2"}
    with FakeOpenAIServer(latency=0.25, responder=ga_responder) as server:
        prov = gs.create_provider(db, project_id=pid, data={"name": "p", "base_url": server.url,
                                                             "model": "m", "max_concurrency": 3,
                                                             "timeout_s": 5})
        docs = list(db.scalars(select(Document.id).where(Document.project_id == pid)))
        pair_ids = [diversity_service.create_pair(db, project_id=pid, document_id=d, genre=g,
                                                  audience=a).id
                    for d in docs for g, a in (("exam question", "student"),
                                               ("troubleshooting", "engineer"))]
        db.commit()
        gs.ensure_builtin_templates(db)
        tid = db.scalar(select(PromptTemplate.id).where(PromptTemplate.name == "question_ga.en"))
        job = gs.create_job(db, project_id=pid, template_id=tid, provider_id=prov.id,
                            params={"n": 1, "ga_pair_ids": pair_ids})
        db.info.pop("annotune_pending_tasks", None)  # sent through the real broker below
        db.commit()
        job_id = job.id
        assert job.total_units == 24  # 12 chunks x 2 pairs of their document
        w.purge()
        with w.running_worker("generate", name="ga-a", log_path=tmp_path / "a.log", **env) as proc:
            w.client().send_task("generation.run_job", kwargs={"job_id": job_id}, queue="generate")
            w.wait_for(db, lambda: db.get(GenerationJob, job_id).done_units >= 4, 30,
                       "4 units done", tmp_path / "a.log")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        db.expire_all()
        assert 0 < db.get(GenerationJob, job_id).done_units < 24
        with w.running_worker("generate", name="ga-b", log_path=tmp_path / "b.log", **env):
            w.wait_for(db, lambda: db.get(GenerationJob, job_id).status == "succeeded", 90,
                       "the job to succeed", tmp_path / "b.log")
    db.expire_all()
    job = db.get(GenerationJob, job_id)
    assert job.done_units == 24
    units = db.scalars(select(GenerationUnit).where(GenerationUnit.job_id == job_id)).all()
    assert len(units) == len({(u.chunk_id, u.ga_pair_id) for u in units}) == 24
    assert all(u.status == "done" for u in units)
    keys = db.scalars(select(Sample.unit_key).where(Sample.generation_job_id == job_id)).all()
    assert len(keys) == len(set(keys)) == 24
    assert db.scalar(select(func.count()).select_from(Sample).where(
        Sample.generation_job_id == job_id)) == 24


def test_near_duplicate_questions_across_variants_are_found_and_tagged(client, db, project):
    owner, pid = project
    api = f"/api/v1/projects/{pid}"
    questions = ["As a student: what does LoRA train while the pretrained weights stay frozen?",
                 "As a student, what does LoRA train while the pretrained weights stay frozen",
                 "How many GPUs does full fine-tuning of a 70B model need, as an engineer?",
                 "As a STUDENT: what does LoRA train while the pretrained weights stay frozen?"]
    ids = []
    for q in questions:
        s = Sample(project_id=pid, generation_job_id=77, status="pending", version=1,
                   messages=[{"role": "user", "content": q},
                             {"role": "assistant", "content": f"answer to {q}"}])
        db.add(s)
        db.flush()
        ids.append(s.id)
    db.commit()
    other = Sample(project_id=pid, status="pending", version=1, messages=[
        {"role": "user", "content": questions[0]}, {"role": "assistant", "content": "x"}])
    db.add(other)
    db.commit()
    everything = client.post(f"{api}/near-duplicates", headers=owner.headers,
                             json={"tag": None}).json()  # neither: all the project's samples
    assert everything["checked"] == 5 and other.id in {p["sample_id"] for p in everything["pairs"]}
    report = client.post(f"{api}/near-duplicates", headers=owner.headers,
                         json={"generation_job_id": 77, "tag": None}).json()
    assert report["checked"] == 4 and report["tagged"] == 0
    assert [(p["sample_id"], p["duplicate_of"]) for p in report["pairs"]] == [
        (ids[1], ids[0]), (ids[3], ids[0])]
    assert all(p["similarity"] >= 0.8 for p in report["pairs"])
    report = client.post(f"{api}/near-duplicates", headers=owner.headers,
                         json={"sample_ids": ids}).json()
    assert report["tagged"] == 2
    tagged = client.get(f"{api}/samples?tag=near-duplicate", headers=owner.headers).json()["items"]
    assert sorted(s["id"] for s in tagged) == [ids[1], ids[3]]
