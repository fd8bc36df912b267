"""Distillation without documents: a topic expanded to a depth, questions per leaf, answers;
on the job kit, with the built-in templates; the samples are tagged with their leaf, marked
ungrounded, reviewed, frozen and exported like any other."""
from __future__ import annotations

import json

from sqlalchemy import func, select, update

from service.models import DiversityJob, Sample
from tests.diversity.conftest import make_provider, responder
from tests.support.openai_server import FakeOpenAIServer
from workers.diversity import runner

TOPIC = "Parameter-efficient fine-tuning"


def test_distillation_from_a_topic_reaches_reviewed_exported_samples(client, db, project):
    owner, pid = project
    api = f"/api/v1/projects/{pid}"
    with FakeOpenAIServer(responder=responder) as server:
        prov = make_provider(client, owner, pid, server.url)
        bad = client.post(f"{api}/distillations", headers=owner.headers, json={"provider_id": prov})
        assert bad.status_code == 422
        assert bad.json()["error"]["details"][0]["field"] == "body.topic"
        job = client.post(f"{api}/distillations", headers=owner.headers, json={
            "provider_id": prov, "topic": TOPIC, "depth": 2, "breadth": 2,
            "questions_per_leaf": 2})
        assert job.status_code == 202, job.text
        job = client.get(f"{api}/diversity-jobs/{job.json()['id']}", headers=owner.headers).json()
        # 1 + 2 expansions, 4 leaves x (1 question call + 2 answers)
        assert job["status"] == "succeeded" and job["result"]["samples"] == 8, job
        usage = job["result"]["usage"]
        assert usage["requests"] == 3 + 4 * 3 == len(server.requests)
        assert usage["prompt_tokens"] == server.stats()["served_prompt_tokens"] > 0
        assert usage["completion_tokens"] == server.stats()["served_completion_tokens"]
    tree = client.get(f"{api}/domain-tree", headers=owner.headers).json()
    assert [r["name"] for r in tree["roots"]] == [TOPIC] and tree["leaves"] == 4
    leaf_names = [leaf["name"] for child in tree["roots"][0]["children"] for leaf in child["children"]]
    assert leaf_names[0] == f"{TOPIC} aspect 1 aspect 1"
    samples = client.get(f"{api}/samples?limit=100", headers=owner.headers).json()["items"]
    assert len(samples) == 8
    for s in samples:
        assert s["source"] == "distillation" and s["domain_leaf_id"] is not None
        assert s["provenance"]["grounded"] is False
        info = s["provenance"]["distillation"]
        assert info["topic"] == TOPIC and info["model"] == "fake-model"
        assert set(info["templates"]) == {"topic_expand", "topic_questions", "topic_answer"}
        assert s["chunk_id"] is None and s["document_id"] is None
        assert s["messages"][0]["content"].startswith("What is ")
        assert s["messages"][1]["content"] == "An expert answer: " + s["messages"][0]["content"]
    cov = client.get(f"{api}/coverage", headers=owner.headers).json()
    assert [r["samples"] for r in cov["leaves"]] == [2, 2, 2, 2]

    # review: every sample accepted through the review API
    for s in samples:
        r = client.post(f"{api}/review/samples/{s['id']}/decision", headers=owner.headers,
                        json={"decision": "accepted", "version": s["version"]})
        assert r.status_code == 200, r.text
    # freeze and export
    ds = client.post(f"{api}/datasets", headers=owner.headers, json={"name": "distilled"}).json()
    version = client.post(f"{api}/datasets/{ds['id']}/versions", headers=owner.headers, json={
        "split": {"train": 1, "validation": 0, "test": 0}}).json()
    base = f"{api}/datasets/{ds['id']}/versions/{version['id']}"
    version = client.get(base, headers=owner.headers).json()
    assert version["status"] == "ready" and version["counts"]["total"] == 8, version
    r = client.post(f"{base}/exports", json={"format": "openai"}, headers=owner.headers)
    assert r.status_code in (200, 202), r.text
    exp = client.get(f"{base}/exports/openai", headers=owner.headers).json()
    assert exp["status"] == "ready", exp
    body = client.get(f"{base}/exports/openai/files/train.jsonl", headers=owner.headers)
    assert body.status_code == 200
    lines = [json.loads(line) for line in body.text.splitlines() if line.strip()]
    assert len(lines) == 8
    assert all([m["role"] for m in line["messages"]] == ["user", "assistant"] for line in lines)
    assert {line["messages"][0]["content"] for line in lines} == {
        s["messages"][0]["content"] for s in samples}


def test_a_resumed_distillation_asks_nothing_twice_and_writes_no_second_copy(client, db, project):
    owner, pid = project
    api = f"/api/v1/projects/{pid}"
    with FakeOpenAIServer(responder=responder) as server:
        prov = make_provider(client, owner, pid, server.url)
        job_id = client.post(f"{api}/distillations", headers=owner.headers, json={
            "provider_id": prov, "topic": TOPIC, "depth": 1, "breadth": 2,
            "questions_per_leaf": 2}).json()["id"]
        first = db.get(DiversityJob, job_id)
        assert first.status == "succeeded" and first.result["samples"] == 4
        calls = len(server.requests)
        # as if the runner died after writing the last leaf's samples but before marking it done
        result = dict(first.result)
        result["leaves_done"] = result["leaves_done"][:-1]
        db.execute(update(DiversityJob).where(DiversityJob.id == job_id).values(
            status="queued", result=result, finished_at=None))
        db.commit()
        out = runner.run_job(job_id)
        assert out["status"] == "succeeded", out
        # only the unfinished leaf was asked again (1 question call + 2 answers); no expansion
        assert len(server.requests) == calls + 3
        expansions = [r for r in server.requests[calls:]
                      if "sub-topics" in r["json"]["messages"][0]["content"]]
        assert expansions == []
    keys = db.scalars(select(Sample.unit_key).where(Sample.project_id == pid)).all()
    assert len(keys) == len(set(keys)) == 4
    assert db.scalar(select(func.count()).select_from(Sample)) == 4
    # distilling from the domain tree's leaves instead of a topic
    with FakeOpenAIServer(responder=responder) as server:
        prov2 = make_provider(client, owner, pid, server.url)
        job = client.post(f"{api}/distillations", headers=owner.headers, json={
            "provider_id": prov2, "use_tree": True, "questions_per_leaf": 1}).json()
        job = client.get(f"{api}/diversity-jobs/{job['id']}", headers=owner.headers).json()
        assert job["status"] == "succeeded" and job["result"]["samples"] == 2, job
        assert not any("sub-topics" in r["json"]["messages"][0]["content"] for r in server.requests)


def test_a_cancelled_job_never_runs_and_a_finished_one_cannot_be_cancelled(client, db, project):
    from service.diversity import service as diversity_service

    owner, pid = project
    api = f"/api/v1/projects/{pid}"
    with FakeOpenAIServer(responder=responder) as server:
        prov = make_provider(client, owner, pid, server.url)
        job = diversity_service.create_job(db, project_id=pid, kind="distill", provider_id=prov,
                                           params={"topic": TOPIC, "depth": 1, "breadth": 1,
                                                   "questions_per_leaf": 1}, actor_id=None)
        db.info.pop("annotune_pending_tasks", None)  # not sent: cancelled while queued
        db.commit()
        r = client.post(f"{api}/diversity-jobs/{job.id}/cancel", headers=owner.headers)
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert runner.run_job(job.id) == {"status": "skipped"}
        assert server.requests == []
        again = client.post(f"{api}/diversity-jobs/{job.id}/cancel", headers=owner.headers)
        assert again.status_code == 409
        listed = client.get(f"{api}/diversity-jobs", headers=owner.headers).json()["items"]
        assert [j["id"] for j in listed] == [job.id]
    assert db.scalar(select(func.count()).select_from(Sample)) == 0
