"""POST /generation-jobs/plan: what Start would do (units, prompts, tokens, time), creating nothing."""
from __future__ import annotations

from sqlalchemy import func, select

from service.models import GenerationJob
from tests.generation.test_engine import make_chunks
from tests.support.openai_server import FakeOpenAIServer


def _ids(client, owner, pid):
    templates = {t["name"]: t["id"] for t in client.get(f"/api/v1/projects/{pid}/templates",
                                                        headers=owner.headers).json()["items"]}
    return templates


def test_plan_counts_units_and_prompts_and_creates_nothing(client, db, factories):
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "plan"}, headers=owner.headers).json()["id"]
    chunk_ids = make_chunks(db, pid, 5)
    provider = client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers, json={
        "name": "p", "base_url": "http://127.0.0.1:9/v1", "model": "m", "max_concurrency": 2}).json()
    t = _ids(client, owner, pid)
    base = f"/api/v1/projects/{pid}/generation-jobs"
    body = {"template_id": t["question.zh"], "provider_id": provider["id"], "samples_per_chunk": 2,
            "params": {"n": 3}}
    plan = client.post(f"{base}/plan", headers=owner.headers, json=body).json()
    assert (plan["units"], plan["chunks"], plan["prompts"]) == (10, 5, 10 * (1 + 3))
    assert plan["confirm"] is False and plan["estimated_seconds"] is None  # nothing measured yet
    assert plan["estimated_prompt_tokens"] > 0 and plan["estimated_completion_tokens"] > 0
    some = client.post(f"{base}/plan", headers=owner.headers,
                       json={**body, "chunk_ids": chunk_ids[:2], "samples_per_chunk": 1}).json()
    assert (some["units"], some["chunks"]) == (2, 2)
    answer = client.post(f"{base}/plan", headers=owner.headers, json={**body, "template_id": t["answer.zh"]})
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "second_stage_template"
    assert db.scalar(select(func.count()).select_from(GenerationJob)) == 0


def test_plan_uses_the_measured_latency_and_skips_done_units(client, db, factories):
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "plan2"}, headers=owner.headers).json()["id"]
    make_chunks(db, pid, 2)
    with FakeOpenAIServer(responder=lambda r: "关键词") as server:
        provider = client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers, json={
            "name": "p", "base_url": server.url, "model": "m"}).json()
        body = {"template_id": _ids(client, owner, pid)["keywords.zh"], "provider_id": provider["id"]}
        job = client.post(f"/api/v1/projects/{pid}/generation-jobs", headers=owner.headers, json=body)
        assert job.status_code == 201, job.text
    plan = client.post(f"/api/v1/projects/{pid}/generation-jobs/plan", headers=owner.headers, json=body).json()
    assert (plan["units"], plan["skipped_units"]) == (0, 2)
    assert plan["provider"]["units"] == 2 and plan["provider"]["latency_s"] > 0
