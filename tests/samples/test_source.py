"""A sample created over REST may name the document (or chunk) it comes from."""
from __future__ import annotations

from tests.generation.test_engine import make_chunks

QA = [{"role": "user", "content": "抽取出下文中的关键词：\n水稻秸秆还田"},
      {"role": "assistant", "content": "水稻;秸秆还田"}]


def test_sample_keeps_its_document_and_chunk(client, db, factories):
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "p"}, headers=owner.headers).json()["id"]
    other = client.post("/api/v1/projects", json={"name": "q"}, headers=owner.headers).json()["id"]
    chunk_ids = make_chunks(db, pid, 1)
    foreign = make_chunks(db, other, 1)[0]
    url = f"/api/v1/projects/{pid}/samples"
    by_chunk = client.post(url, headers=owner.headers, json={"messages": QA, "chunk_id": chunk_ids[0]})
    assert by_chunk.status_code == 201, by_chunk.text
    doc = by_chunk.json()["document_id"]
    assert doc and by_chunk.json()["chunk_id"] == chunk_ids[0]
    by_doc = client.post(url, headers=owner.headers, json={"messages": QA, "document_id": doc})
    assert by_doc.status_code == 201 and by_doc.json()["chunk_id"] is None
    listed = client.get(url, headers=owner.headers, params={"document_id": doc}).json()["items"]
    assert len(listed) == 2

    for body, field in (({"chunk_id": foreign}, "body.chunk_id"),
                        ({"document_id": 10**9}, "body.document_id"),
                        ({"chunk_id": chunk_ids[0], "document_id": doc + 1000}, "body.document_id")):
        resp = client.post(url, headers=owner.headers, json={"messages": QA, **body})
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["details"][0]["field"] == field
