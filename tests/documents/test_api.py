from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from service.core.config import get_settings
from service.models import Chunk, Document


@pytest.fixture
def lead(db, factories, client):
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "docs"}, headers=owner.headers).json()["id"]
    return owner, pid


def _md(i: int) -> bytes:
    return (f"# 第{i}章 Chapter {i}\n\n这是第{i}个文档的正文。It talks about topic number {i}.\n\n"
            f"## Details {i}\n\nMore text for document {i}, with enough words to chunk.\n").encode()


def test_mixed_upload_of_twenty(client, db, lead, monkeypatch):
    owner, pid = lead
    monkeypatch.setattr(get_settings(), "max_upload_bytes", 50_000)
    folder = get_settings().files_dir / f"documents/{pid}"
    # project ids restart in every test; the files of earlier tests' projects stay
    before = set(folder.iterdir()) if folder.exists() else set()
    files = [("files", (f"doc{i}.md", io.BytesIO(_md(i)), "text/markdown")) for i in range(18)]
    corrupt = b"PK\x03\x04" + b"\x00garbage" * 50
    files.append(("files", ("broken.docx", io.BytesIO(corrupt), "application/octet-stream")))
    files.append(("files", ("huge.txt", io.BytesIO(b"x" * 60_000), "text/plain")))
    resp = client.post(f"/api/v1/projects/{pid}/documents", files=files, headers=owner.headers)
    assert resp.status_code == 201, resp.text
    results = resp.json()["results"]
    assert [r["status_code"] for r in results] == [201] * 19 + [413]
    assert "limit" in results[-1]["error"]
    docs = client.get(f"/api/v1/projects/{pid}/documents?limit=100", headers=owner.headers).json()["items"]
    by_status: dict[str, list] = {}
    for d in docs:
        by_status.setdefault(d["status"], []).append(d)
    assert len(by_status["parsed"]) == 18 and len(by_status["failed"]) == 1
    failed = by_status["failed"][0]
    assert failed["filename"] == "broken.docx" and failed["error"]
    assert not any(d["filename"] == "huge.txt" for d in docs)
    stored = set(folder.iterdir()) - before
    assert len(stored) == 19  # nothing of the refused file was kept
    one = by_status["parsed"][0]
    chunks = client.get(f"/api/v1/projects/{pid}/documents/{one['id']}/chunks",
                        headers=owner.headers).json()["items"]
    assert chunks and chunks[0]["heading_path"][0].startswith("第")
    text = client.get(f"/api/v1/projects/{pid}/documents/{one['id']}/text", headers=owner.headers).text
    for c in chunks:
        assert text[c["char_start"]:c["char_end"]] == c["text"]


def test_same_content_twice_is_stored_once(client, db, lead):
    owner, pid = lead
    for name in ("a.md", "b.md"):
        resp = client.post(f"/api/v1/projects/{pid}/documents", headers=owner.headers,
                           files=[("files", (name, io.BytesIO(_md(1)), "text/markdown"))])
    assert resp.json()["results"][0]["duplicate"] is True
    assert db.scalar(select(func.count()).select_from(Document)) == 1


def test_single_oversized_upload_is_413(client, lead, monkeypatch):
    owner, pid = lead
    monkeypatch.setattr(get_settings(), "max_upload_bytes", 100)
    resp = client.post(f"/api/v1/projects/{pid}/documents", headers=owner.headers,
                       files=[("files", ("big.txt", io.BytesIO(b"y" * 1000), "text/plain"))])
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "too_large"


def test_preview_rechunk_delete_and_conflict(client, db, lead):
    owner, pid = lead
    body = ("# Title\n\n" + "\n\n".join(f"Paragraph {i}. " + "word " * 60 for i in range(20))).encode()
    doc_id = client.post(f"/api/v1/projects/{pid}/documents", headers=owner.headers,
                         files=[("files", ("long.md", io.BytesIO(body), "text/markdown"))]
                         ).json()["results"][0]["document_id"]
    prev = client.post(f"/api/v1/projects/{pid}/documents/{doc_id}/chunk-preview", headers=owner.headers,
                       json={"strategy": "recursive", "max_chars": 400}).json()
    before = db.scalar(select(func.count()).select_from(Chunk))
    assert prev["count"] > before  # smaller chunks, nothing stored yet
    bad = client.post(f"/api/v1/projects/{pid}/documents/{doc_id}/chunk-preview", headers=owner.headers,
                      json={"strategy": "recursive", "max_chars": 400, "overlap": 300})
    assert bad.status_code == 422
    re = client.post(f"/api/v1/projects/{pid}/documents/{doc_id}/rechunk", headers=owner.headers,
                     json={"strategy": "recursive", "max_chars": 400})
    assert re.status_code == 200 and re.json()["chunk_count"] == prev["count"]
    assert db.scalar(select(func.count()).select_from(Chunk)) == prev["count"]

    chunk_id = db.scalar(select(Chunk.id).order_by(Chunk.id))
    from service.samples import service as samples_service

    s = samples_service.create_sample(db, project_id=pid, chunk_id=chunk_id, document_id=doc_id,
                                      messages=[{"role": "user", "content": "q"},
                                                {"role": "assistant", "content": "a"}])
    db.commit()
    refused = client.delete(f"/api/v1/projects/{pid}/documents/{doc_id}", headers=owner.headers)
    assert refused.status_code == 409 and refused.json()["error"]["sample_ids"] == [s.id]
    db.delete(s)
    db.commit()
    assert client.delete(f"/api/v1/projects/{pid}/documents/{doc_id}", headers=owner.headers).status_code == 204
    assert db.scalar(select(func.count()).select_from(Chunk)) == 0


def test_redaction_setting_applies_to_chunks(client, db, lead):
    owner, pid = lead
    client.patch(f"/api/v1/projects/{pid}", headers=owner.headers,
                 json={"settings": {"redaction": {"enabled": True}}})
    text = "联系人：张三，电话 13812345678，邮箱 zhang.san@example.com。Server at 192.168.1.20.\n"
    doc_id = client.post(f"/api/v1/projects/{pid}/documents", headers=owner.headers,
                         files=[("files", ("pii.txt", io.BytesIO(text.encode()), "text/plain"))]
                         ).json()["results"][0]["document_id"]
    chunk = client.get(f"/api/v1/projects/{pid}/documents/{doc_id}/chunks",
                       headers=owner.headers).json()["items"][0]
    for secret in ("13812345678", "zhang.san@example.com", "192.168.1.20"):
        assert secret not in chunk["text"] and secret not in chunk["redacted_text"]
    assert "[PHONE]" in chunk["redacted_text"] and "[EMAIL]" in chunk["redacted_text"]


def test_near_duplicates_marked_not_deleted(client, db, lead):
    owner, pid = lead
    base = ("Annotators review every generated sample in the browser before it reaches a dataset. "
            "They can edit the answer, accept it, reject it with a reason, or ask for changes. "
            "Every decision is stored with the reviewer and the time, so the history is complete. "
            "Two people never overwrite each other because each save carries the version it read.")
    near = base.replace("browser", "web page").replace("complete", "whole")
    other = ("QLoRA keeps the base weights in four-bit NF4 and trains small low-rank adapters in "
             "higher precision, which lets a single GPU fine-tune models that would not fit.")
    for i, t in enumerate((base, near, other)):
        client.post(f"/api/v1/projects/{pid}/documents", headers=owner.headers,
                    files=[("files", (f"d{i}.txt", io.BytesIO(t.encode()), "text/plain"))])
    assert client.post(f"/api/v1/projects/{pid}/duplicates", json={"threshold": 0.7},
                       headers=owner.headers).status_code == 202
    report = client.get(f"/api/v1/projects/{pid}/duplicates", headers=owner.headers).json()["report"]
    assert report["clusters"] == 1 and report["marked"] == 1
    assert db.scalar(select(func.count()).select_from(Chunk)) == 3
    assert db.scalar(select(func.count()).select_from(Chunk).where(Chunk.duplicate_kind == "near")) == 1


def test_docx_page_parts_and_notes_are_chunked_and_redacted(client, db, lead, tmp_path):
    from tests.documents.test_parsing_docx import make_docx_with_notes, make_docx_with_page_parts

    owner, pid = lead
    client.patch(f"/api/v1/projects/{pid}", headers=owner.headers,
                 json={"settings": {"redaction": {"enabled": True}}})
    chunks_of = {}
    for name, make in (("pages.docx", make_docx_with_page_parts), ("notes.docx", make_docx_with_notes)):
        data = make(tmp_path / name).read_bytes()
        result = client.post(f"/api/v1/projects/{pid}/documents", headers=owner.headers,
                             files=[("files", (name, io.BytesIO(data), "application/octet-stream"))]
                             ).json()["results"][0]
        assert result["status_code"] == 201, result
        chunks_of[name] = client.get(f"/api/v1/projects/{pid}/documents/{result['document_id']}/chunks",
                                     headers=owner.headers).json()["items"]
    page_chunks = chunks_of["pages.docx"]
    footer = next(c for c in page_chunks if "Questions:" in c["redacted_text"])
    assert "[PHONE]" in footer["redacted_text"] and "[EMAIL]" in footer["redacted_text"]
    assert all("13812345678" not in c["text"] + c["redacted_text"] for c in page_chunks)
    assert footer["heading_path"] == [] and footer["page_start"] is None
    note = next(c for c in chunks_of["notes.docx"] if "Costs per unit" in c["text"])
    assert note["heading_path"] == ["Footnotes"]


def test_quality_report_in_the_api_and_on_the_page(client, db, lead):
    """A real manual's excerpt (tests/documents/fixtures): the report is stored in
    Document.meta["quality"], returned by the API, shown on the page, kept on re-chunk."""
    from pathlib import Path

    owner, pid = lead
    pdf = Path(__file__).parent / "fixtures" / "debian-reference-en-excerpt.pdf"
    files = [("files", (pdf.name, io.BytesIO(pdf.read_bytes()), "application/pdf"))]
    result = client.post(f"/api/v1/projects/{pid}/documents", headers=owner.headers,
                         files=files).json()["results"][0]
    url = f"/api/v1/projects/{pid}/documents/{result['document_id']}"
    doc = client.get(url, headers=owner.headers).json()
    assert doc["status"] == "parsed", doc
    quality = doc["quality"]
    assert quality["warnings"] == [] and quality["glued_chunks"] == 0
    assert quality["furniture_pages"] == 10 and quality["toc_pages"] == [2, 3]
    assert quality["chunks"] == doc["chunk_count"]
    page = client.get(f"/projects/{pid}/documents/{doc['id']}", headers=owner.headers)
    assert page.status_code == 200 and 'data-testid="quality"' in page.text
    assert "header/footer lines removed on 10 of 10 pages" in page.text
    assert 'data-testid="quality-warning"' not in page.text
    resp = client.post(f"{url}/rechunk", headers=owner.headers,
                       json={"strategy": "recursive", "max_chars": 300})
    assert resp.status_code == 200, resp.text
    again = client.get(url, headers=owner.headers).json()
    assert again["quality"]["chunks"] == again["chunk_count"] > doc["chunk_count"]
