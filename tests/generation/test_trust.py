"""Samples you can trust (issue 15): generated samples pass the one validation gate and are found
by the text search; outputs honour the template's contract; every token is counted."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from service.models import GenerationUnit, Sample
from tests.generation.test_engine import _template_id, make_chunks
from tests.support.openai_server import FakeOpenAIServer


@pytest.fixture
def project(db, factories, client):
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "trust"}, headers=owner.headers).json()["id"]
    return owner, pid


def _provider(client, owner, pid, server, **extra) -> int:
    resp = client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers, json={
        "name": "p", "base_url": server.url, "model": "fake-model", "max_concurrency": 1,
        **extra})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def _run(client, owner, pid, server, template: str, params: dict | None = None, **provider):
    tid = _template_id(client, owner, pid, template)
    job = client.post(f"/api/v1/projects/{pid}/generation-jobs", headers=owner.headers,
                      json={"template_id": tid, "params": params or {},
                            "provider_id": _provider(client, owner, pid, server, **provider)})
    assert job.status_code == 201, job.text
    return client.get(f"/api/v1/projects/{pid}/generation-jobs/{job.json()['id']}",
                      headers=owner.headers).json()


def _units(client, owner, pid, job_id: int) -> list[dict]:
    return client.get(f"/api/v1/projects/{pid}/generation-jobs/{job_id}/units",
                      headers=owner.headers).json()["items"]


def _search(client, owner, pid, q: str) -> list[dict]:
    resp = client.get(f"/api/v1/projects/{pid}/samples", params={"q": q}, headers=owner.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


# -- A: the gate, the hash and the search text -------------------------------------------------

def test_generated_samples_are_found_by_the_text_search(client, db, project):
    owner, pid = project
    make_chunks(db, pid, 2)
    answer = json.dumps([{"instruction": "安装哪个软件包？", "input": "",
                          "output": "先安装 Nginx 软件包，再配置反向代理。"}], ensure_ascii=False)
    with FakeOpenAIServer(responder=lambda req: answer) as server:
        job = _run(client, owner, pid, server, "instruction.zh", {"n": 1})
    assert job["status"] == "succeeded" and job["done_units"] == 2, job
    found = _search(client, owner, pid, "软件包")
    assert len(found) == 2 and all(s["source"] == "generation" for s in found)
    assert [s["id"] for s in _search(client, owner, pid, "反向代理")] == [s["id"] for s in found]
    assert _search(client, owner, pid, "instruction") == []  # JSON keys never match
    row = db.scalar(select(Sample).where(Sample.id == found[0]["id"]))
    assert row.search_text == "安装哪个软件包?\n先安装 nginx 软件包,再配置反向代理。"  # NFKC
    assert len(row.content_hash) == 64


def test_a_conversation_the_gate_refuses_fails_the_unit_with_the_reason(client, db, project):
    owner, pid = project
    make_chunks(db, pid, 1)
    empty = json.dumps([{"instruction": "Summarise", "input": "", "output": "   "}])
    with FakeOpenAIServer(responder=lambda req: empty) as server:
        job = _run(client, owner, pid, server, "instruction.en", {"n": 1})
    assert job["status"] == "failed" and job["failed_units"] == 1, job
    [unit] = _units(client, owner, pid, job["id"])
    assert unit["error_code"] == "invalid_sample"
    assert unit["error"].startswith("the validation gate refused the sample: messages[1].content")
    assert unit["raw_output"] == empty  # what the model said is kept
    assert db.scalar(select(func.count()).select_from(Sample)) == 0
    assert db.scalar(select(GenerationUnit.attempts)) == 3
