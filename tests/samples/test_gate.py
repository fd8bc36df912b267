"""One validation gate for every way a sample enters or changes: REST create and edit, review
decisions and adjudication, imports (strict and skip), bulk changes (generation:
tests/generation/test_gate.py). Each refuses an empty turn, a whitespace-only turn, a broken
role order, a NUL and a lone surrogate with a 4xx (or an import report line) naming the field,
and writes nothing."""
from __future__ import annotations

import json

import orjson
import pytest
from sqlalchemy import func, select

from service.models import Sample, SampleRevision
from service.samples import store, validation

QA = [{"role": "user", "content": "什么是 LoRA？"}, {"role": "assistant", "content": "低秩适配。"}]
# (name, messages with "@" where the bad text goes, what replaces "@" in the JSON, field)
BAD = {
    "empty": ([QA[0], {"role": "assistant", "content": "@"}], "", "messages.1.content"),
    "whitespace": ([QA[0], {"role": "assistant", "content": "@"}], " \\n\\t ", "messages.1.content"),
    "role_order": ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "q@"}], "",
                   "messages.0.role"),
    "nul": ([QA[0], {"role": "assistant", "content": "x@y"}], "\\u0000", "messages.1.content"),
    "surrogate": ([QA[0], {"role": "assistant", "content": "x@y"}], "\\ud800", "messages.1.content"),
}


def _raw(body: dict, fill: str) -> bytes:
    """The JSON body with ``@`` replaced by ``fill`` as written (escapes an encoder refuses)."""
    return orjson.dumps(body).replace(b"@", fill.encode())


@pytest.fixture
def crew(db, factories, client):
    owner = factories.make_actor(db)
    annotator = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "gate"}, headers=owner.headers).json()["id"]
    client.post(f"/api/v1/projects/{pid}/members", json={"email": annotator.email},
                headers=owner.headers)
    sid = client.post(f"/api/v1/projects/{pid}/samples", json={"messages": QA},
                      headers=owner.headers).json()["id"]
    return owner, annotator, pid, sid


def _counts(db):
    db.expire_all()
    return (db.scalar(select(func.count()).select_from(Sample)),
            db.scalar(select(func.count()).select_from(SampleRevision)),
            db.scalar(select(func.max(Sample.version))))


def _field(resp) -> str:
    return resp.json()["error"]["details"][0]["field"]


@pytest.mark.parametrize("case", sorted(BAD))
def test_every_http_entry_path_refuses_with_the_field_and_writes_nothing(client, db, crew, case):
    owner, annotator, pid, sid = crew
    messages, fill, field = BAD[case]
    base = f"/api/v1/projects/{pid}"
    paths = [
        ("post", f"{base}/samples", owner, {"messages": messages}),
        ("patch", f"{base}/samples/{sid}", annotator, {"version": 1, "messages": messages}),
        ("post", f"{base}/review/samples/{sid}/decision", annotator,
         {"decision": "accepted", "version": 1, "messages": messages}),
        ("post", f"{base}/review/samples/{sid}/adjudicate", owner,
         {"decision": "accepted", "version": 1, "messages": messages}),
    ]
    before = _counts(db)
    for method, url, who, body in paths:
        resp = getattr(client, method)(url, content=_raw(body, fill),
                                       headers={**who.headers, "content-type": "application/json"})
        assert resp.status_code == 422, (url, resp.status_code, resp.text)
        assert _field(resp) == f"body.{field}", (url, resp.json())
        assert _counts(db) == before, url


@pytest.mark.parametrize("tag", ["", "   ", "a\\u0000b", "\\ud800"])
def test_bulk_refuses_blank_and_unstorable_tags(client, db, crew, tag):
    owner, _, pid, sid = crew
    body = _raw({"filter": {"ids": [sid]}, "add_tags": ["@"]}, tag)
    resp = client.post(f"/api/v1/projects/{pid}/samples-bulk", content=body,
                       headers={**owner.headers, "content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    assert _field(resp).startswith("body.add_tags.0"), resp.json()
    db.expire_all()
    assert db.get(Sample, sid).tags == [] and db.get(Sample, sid).version == 1


def _import(client, pid, owner, lines: list[bytes], mode: str):
    resp = client.post(f"/api/v1/projects/{pid}/imports", headers=owner.headers,
                       data={"mode": mode},
                       files={"file": ("d.jsonl", b"\n".join(lines) + b"\n", "application/jsonl")})
    assert resp.status_code == 202, resp.text
    return client.get(f"/api/v1/projects/{pid}/imports/{resp.json()['id']}",
                      headers=owner.headers).json()


@pytest.mark.parametrize("case", sorted(BAD))
def test_import_strict_rejects_the_file_naming_line_and_field(client, db, crew, case):
    owner, _, pid, _ = crew
    messages, fill, field = BAD[case]
    good = orjson.dumps({"messages": QA})
    before = _counts(db)
    job = _import(client, pid, owner, [good, _raw({"messages": messages}, fill), good], "strict")
    assert job["status"] == "rejected" and job["imported"] == 0
    (entry,) = job["report"]
    assert entry["line"] == 2
    assert entry["field"] == field.replace(".1.", "[1].").replace(".0.", "[0].")
    assert entry["field"] in entry["message"]
    assert _counts(db) == before

    skipped = _import(client, pid, owner, [good, _raw({"messages": messages}, fill), good], "skip")
    assert skipped["status"] == "succeeded" and (skipped["imported"], skipped["skipped"]) == (2, 1)
    assert skipped["report"][0]["line"] == 2 and skipped["report"][0]["code"] == entry["code"]


def test_mapped_import_names_the_files_own_field(client, db, crew):
    """The issue's line: an empty assistant under a field mapping is refused in strict mode."""
    owner, _, pid, _ = crew
    line = b'{"conversation":[{"human":"q","assistant":""}]}'
    resp = client.post(f"/api/v1/projects/{pid}/imports", headers=owner.headers,
                       data={"mode": "strict", "mapping": json.dumps(
                           {"list_field": "conversation", "user": "human",
                            "assistant": "assistant"})},
                       files={"file": ("m.jsonl", line + b"\n", "application/jsonl")})
    job = client.get(f"/api/v1/projects/{pid}/imports/{resp.json()['id']}",
                     headers=owner.headers).json()
    assert job["status"] == "rejected"
    assert job["report"] == [{"line": 1, "index": 0, "code": "empty_response",
                              "field": "conversation[0].assistant",
                              "message": "conversation[0].assistant: the final assistant "
                                         "response is empty"}]


def test_the_orm_backstop_refuses_whatever_path_skips_the_gate(db, crew):
    _, _, pid, _ = crew
    db.add(Sample(project_id=pid, messages=[QA[0], {"role": "assistant", "content": " "}],
                  content_hash="x", status="pending", source="manual", version=1))
    with pytest.raises(store.UncheckedSample, match="empty_response"):
        db.flush()
    db.rollback()


def test_gate_rules():
    assert validation.gate_issues(QA) == []
    system_blank = [{"role": "system", "content": " "}, *QA]
    assert [i.code for i in validation.gate_issues(system_blank)] == ["empty_content"]
    odd = [*QA, {"role": "user", "content": "and?"}]
    assert [i.code for i in validation.gate_issues(odd)] == ["turn_count"]
    with pytest.raises(validation.SampleInvalid) as caught:
        validation.accept([{"role": "user", "content": "a\x00"}, QA[1]])
    assert caught.value.issues[0].field == "messages[0].content"
