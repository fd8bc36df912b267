"""Shared helpers of the diversity tests: a project with documents, a fake OpenAI provider that
answers each diversity prompt by what it asks."""
from __future__ import annotations

import json
import re

import pytest

from service.models import Chunk, Document
from tests.support.live_server import live_server  # noqa: F401  (fixture)

TREE = [{"name": "Fine-tuning", "children": [{"name": "LoRA"}, {"name": "Full fine-tuning"}]},
        {"name": "Serving", "children": [{"name": "Quantisation"}, {"name": "Batching"}]}]


def make_documents(db, project_id: int, *, docs: int = 2, chunks: int = 3) -> list[int]:
    """``docs`` parsed documents of ``chunks`` chunks each (headings as a TOC); chunk ids."""
    ids = []
    for d in range(docs):
        doc = Document(project_id=project_id, filename=f"guide{d}.md", sha256=f"{d:064d}",
                       storage_path="/dev/null", status="parsed", format="markdown", text="",
                       meta={})
        db.add(doc)
        db.flush()
        for i in range(chunks):
            c = Chunk(project_id=project_id, document_id=doc.id, ordinal=i,
                      text=f"Document {d} part {i}: LoRA trains low-rank matrices {d}-{i}.",
                      char_start=0, char_end=10, heading_path=[f"Chapter {d}", f"Part {i}"],
                      token_count=12, content_hash=f"{d}{i:063d}")
            db.add(c)
            db.flush()
            ids.append(c.id)
    db.commit()
    return ids


def prompt_of(request: dict) -> str:
    return request["messages"][-1]["content"]


def responder(request: dict) -> str:
    """What a model would answer to each built-in diversity prompt (English)."""
    text = prompt_of(request)
    if "Which leaf" in text:  # the leaf whose name the question mentions, else the first
        leaves = re.findall(r"^(\d+)\. (.+)$", text, re.MULTILINE)
        question = text.split("Question:", 1)[1]
        for number, path in leaves:
            if path.split(" › ")[-1] in question:
                return json.dumps({"leaf": int(number)})
        return json.dumps({"leaf": 1})
    if "domain label tree" in text:
        return json.dumps(TREE)
    if "(genre, audience) pairs" in text:
        return json.dumps([{"genre": "exam question", "audience": "student"},
                           {"genre": "troubleshooting", "audience": "engineer"}])
    if "List " in text and "sub-topics" in text:
        branch = text.split("Current branch: ", 1)[1].splitlines()[0]
        last = branch.split(" › ")[-1]
        return "\n".join(f"{i}. {last} aspect {i}" for i in (1, 2))
    if "Write " in text and "questions about" in text:
        path = text.split("part of the subject: ", 1)[1].splitlines()[0]
        return "\n".join(f"{i}. What is {path.split(' › ')[-1]} point {i}?" for i in (1, 2))
    if text.startswith("You are an expert on:"):
        return "An expert answer: " + text.split("Question: ", 1)[1].splitlines()[0]
    return "ok"


@pytest.fixture
def project(db, factories, client):
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "diversity"},
                      headers=owner.headers).json()["id"]
    return owner, pid


def make_provider(client, owner, pid, url: str) -> int:
    resp = client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers, json={
        "name": "fake", "base_url": url, "model": "fake-model", "max_concurrency": 2})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]
