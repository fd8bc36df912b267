"""Hostile input: every case is a clear 4xx naming what was wrong, never a 500, nothing left on
disk (issue 17 items 2, 3 and 8; issue 18 item 8)."""
from __future__ import annotations

import orjson
import pytest
from sqlalchemy import func, select

from service.core.config import get_settings
from tests.hostile.conftest import qa


def _field(resp) -> str:
    return resp.json()["error"]["details"][0]["field"]


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800", "x\udfffy"])
def test_nul_and_lone_surrogates_are_422_naming_the_field(client, crew, sample_id, bad):
    h = crew.lead.headers
    # JSON escapes written by hand: an encoder refuses lone surrogates
    text = "".join(f"\\u{ord(c):04x}" if ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF else c for c in bad)
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "@"}]
    cases = [
        ("post", crew.url("/samples"), {"messages": messages}, "body.messages.1.content"),
        ("patch", crew.url(f"/samples/{sample_id}"), {"version": 1, "tags": ["@"]}, "body.tags.0"),
        ("post", "/api/v1/projects", {"name": "@"}, "body.name"),
        ("post", crew.url("/datasets"), {"name": "@"}, "body.name"),
    ]
    for method, url, body, field in cases:
        raw = orjson.dumps(body).replace(b"@", text.encode())
        resp = getattr(client, method)(url, headers={**h, "content-type": "application/json"},
                                       content=raw)
        assert resp.status_code == 422, (url, resp.status_code, resp.text)
        assert _field(resp) == field, resp.json()
    resp = client.get(crew.url("/samples"), headers=h, params={"q": "a\x00b"})
    assert resp.status_code == 422 and _field(resp) == "query.q"


def test_ids_beyond_64_bits_are_422(client, crew, sample_id):
    h = crew.lead.headers
    big = 2**64
    assert client.get(crew.url(f"/samples/{big}"), headers=h).status_code == 422
    resp = client.get(crew.url("/samples"), headers=h, params={"document_id": str(big)})
    assert resp.status_code == 422 and _field(resp) == "query.document_id"
    resp = client.post(crew.url("/samples-bulk"), headers=h,
                       json={"filter": {"ids": [sample_id, big]}, "status": "accepted"})
    assert resp.status_code == 422 and _field(resp) == "body.filter.ids.1"
    resp = client.post(crew.url("/review/samples/1/decision"), headers=h,
                       json={"decision": "accepted", "version": -big})
    assert resp.status_code == 422
    # a string that only looks like a number is fine where a string is expected
    assert client.get(crew.url("/samples"), headers=h, params={"q": str(big)}).status_code == 200


def test_size_caps_on_lists_and_strings(client, crew, sample_id):
    h = crew.lead.headers
    resp = client.patch(crew.url(f"/samples/{sample_id}"), headers=h,
                        json={"version": 1, "tags": [f"t{i}" for i in range(200_000)]})
    assert resp.status_code == 422
    resp = client.patch(crew.url(f"/samples/{sample_id}"), headers=h, json={"version": 1, "tags": ["x" * 201]})
    assert resp.status_code == 422 and _field(resp) == "body.tags.0"
    resp = client.post(crew.url("/samples-bulk"), headers=h,
                       json={"filter": {"ids": list(range(1, 300_001))}, "status": "accepted"})
    assert resp.status_code == 422, resp.text
    # the caps are in the published schema
    schema = client.get("/api/v1/openapi.json").json()["components"]["schemas"]
    assert schema["FilterSpec"]["properties"]["ids"]["anyOf"][0]["maxItems"] == 100_000
    tags = schema["SampleUpdate"]["properties"]["tags"]["anyOf"][0]
    assert tags["maxItems"] == 100 and tags["items"]["maxLength"] == 200


def test_json_body_over_the_cap_is_413(client, crew, monkeypatch):
    monkeypatch.setattr(get_settings(), "max_body_bytes", 10_000)
    h = {**crew.lead.headers, "content-type": "application/json"}
    body = orjson.dumps({"name": "p", "description": "x" * 20_000})
    resp = client.post("/api/v1/projects", headers=h, content=body)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "too_large"

    def chunks():  # no Content-Length: refused once the streamed bytes pass the cap
        yield b'{"name": "p", "description": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    resp = client.post("/api/v1/projects", headers=h, content=chunks())
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["code"] == "too_large"


def test_upload_over_the_limit_is_refused_while_streaming(client, crew, monkeypatch):
    monkeypatch.setattr(get_settings(), "max_upload_request_bytes", 50_000)
    before = _files()
    resp = client.post(crew.url("/documents"), headers=crew.lead.headers,
                       files=[("files", ("big.txt", b"y" * 200_000, "text/plain"))])
    assert resp.status_code == 413
    assert _files() == before


def _files() -> set[str]:
    root = get_settings().files_dir
    return {str(p) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def test_nul_in_an_upload_file_name_is_422_and_nothing_is_kept(client, crew):
    before = _files()
    # raw multipart: HTTP clients percent-encode a NUL in a file name, an attacker does not
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"files\"; filename=\"evil\x00.txt\"\r\n"
            b"Content-Type: text/plain\r\n\r\nhello world\r\n--XyZ--\r\n")
    resp = client.post(crew.url("/documents"), content=body,
                       headers={**crew.lead.headers, "content-type": "multipart/form-data; boundary=XyZ"})
    assert resp.status_code == 422, resp.text
    assert _field(resp) == "body.files.filename"
    assert _files() == before


def test_import_line_with_nul_is_reported_on_its_line(client, db, crew):
    from service.models import ImportJob

    lines = [orjson.dumps({"messages": qa(1)}),
             b'{"messages": [{"role": "user", "content": "bad\\u0000"}, {"role": "assistant", "content": "a"}]}',
             orjson.dumps({"messages": qa(3)})]
    resp = client.post(crew.url("/imports"), headers=crew.lead.headers, data={"mode": "skip"},
                       files={"file": ("nul.jsonl", b"\n".join(lines), "application/jsonl")})
    assert resp.status_code == 202, resp.text
    job = db.get(ImportJob, resp.json()["id"])
    db.refresh(job)
    assert job.status == "succeeded", job.error
    assert (job.imported, job.skipped) == (2, 1)
    assert job.report[0]["line"] == 2 and job.report[0]["code"] == "invalid_characters"


@pytest.mark.parametrize("name", ["bogus", "tiktoken:nope", "hf:/nonexistent", "hf:/etc"])
def test_unknown_tokenizer_is_422(client, crew, name):
    resp = client.get(crew.url("/sample-stats"), headers=crew.lead.headers, params={"tokenizer": name})
    assert resp.status_code == 422, resp.text
    assert _field(resp) == "query.tokenizer"


def test_bulk_assignee_must_be_a_member(client, crew, sample_id):
    h = crew.lead.headers
    for who in (10**12, crew.outsider.user_id):
        resp = client.post(crew.url("/samples-bulk"), headers=h,
                           json={"filter": {"ids": [sample_id]}, "assignee_id": who})
        assert resp.status_code == 422 and _field(resp) == "body.assignee_id", resp.text
    resp = client.post(crew.url("/review/assign"), headers=h,
                       json={"annotator_ids": [10**12]})
    assert resp.status_code == 422
    ok = client.post(crew.url("/samples-bulk"), headers=h,
                     json={"filter": {"ids": [sample_id]}, "assignee_id": crew.ann1.user_id})
    assert ok.status_code == 200, ok.text


def test_only_the_assignee_decides_an_assigned_sample(client, db, crew, sample_id):
    from service.models import Sample

    db.get(Sample, sample_id).assignee_id = crew.ann1.user_id
    db.commit()
    body = {"decision": "accepted", "version": 1}
    other = client.post(crew.url(f"/review/samples/{sample_id}/decision"), headers=crew.ann2.headers, json=body)
    assert other.status_code == 403 and other.json()["error"]["code"] == "assigned_to_other"
    status = client.post(crew.url(f"/samples/{sample_id}/status"), headers=crew.ann2.headers,
                         json={"version": 1, "status": "accepted"})
    assert status.status_code == 403
    mine = client.post(crew.url(f"/review/samples/{sample_id}/decision"), headers=crew.ann1.headers, json=body)
    assert mine.status_code == 200, mine.text
    # a lead may override
    resp = client.post(crew.url(f"/review/samples/{sample_id}/decision"), headers=crew.lead.headers,
                       json={"decision": "rejected", "version": 2, "reason": "off-topic"})
    assert resp.status_code == 200, resp.text


def test_deleting_a_provider_used_by_a_job_is_409(client, db, crew):
    from service.models import GenerationJob, LLMProvider, PromptTemplate

    provider = LLMProvider(project_id=crew.project_id, name="p", model="m", base_url="http://x")
    template = PromptTemplate(project_id=crew.project_id, name="t", kind="question", text="{{ chunk }}")
    db.add_all([provider, template])
    db.flush()
    db.add(GenerationJob(project_id=crew.project_id, kind="question", template_id=template.id,
                         provider_id=provider.id))
    db.commit()
    resp = client.delete(crew.url(f"/providers/{provider.id}"), headers=crew.lead.headers)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "provider_in_use"
    assert db.scalar(select(func.count()).select_from(LLMProvider)) == 1


def test_deleting_a_project_removes_its_files(client, db, crew):
    up = client.post(crew.url("/documents"), headers=crew.lead.headers,
                     files=[("files", ("a.md", b"# A\n\nsome text here", "text/markdown"))])
    assert up.status_code == 201, up.text
    imp = client.post(crew.url("/imports"), headers=crew.lead.headers, data={"mode": "skip"},
                      files={"file": ("i.jsonl", orjson.dumps({"messages": qa()}), "application/jsonl")})
    assert imp.status_code == 202
    from service.models import Document, ImportJob

    paths = [db.scalar(select(Document.storage_path)), db.get(ImportJob, imp.json()["id"]).storage_path]
    from pathlib import Path

    assert all(Path(p).exists() for p in paths)
    resp = client.delete(crew.url(), headers=crew.lead.headers)
    assert resp.status_code == 204, resp.text
    assert not any(Path(p).exists() for p in paths)
    assert not (get_settings().files_dir / "documents" / str(crew.project_id)).exists()
