"""The embedded default takes concurrent writes: 20 writers at once over real HTTP (uploads,
sample edits, imports), every one succeeds (issue 16: 13 files chosen at once lost 5 to
"database is locked")."""
from __future__ import annotations

import threading

import httpx
import orjson
import pytest

from tests.conftest import PG_URL
from tests.support.live_server import live_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(bool(PG_URL), reason="the SQLite default only")


def _qa(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]


def test_twenty_concurrent_writers_all_succeed(live_server, db, factories):  # noqa: F811
    from service.models import User
    from service.samples import service as samples_service

    lead = factories.make_actor(db)
    project = factories.make_project(db, db.get(User, lead.user_id), name="Concurrent")
    sample_ids = [samples_service.create_sample(db, project_id=project.id, messages=_qa(i)).id
                  for i in range(8)]
    db.commit()
    base = f"{live_server.url}/api/v1/projects/{project.id}"

    def upload(i: int) -> httpx.Response:
        text = f"# Document {i}\n\n" + f"Paragraph {i} about concurrent writes. " * 50
        return client.post(f"{base}/documents",
                           files=[("files", (f"doc{i}.md", text.encode(), "text/markdown"))])

    def edit(i: int) -> httpx.Response:
        sid = sample_ids[i]
        return client.patch(f"{base}/samples/{sid}", headers={"If-Match": '"1"'},
                            json={"messages": _qa(1000 + i), "tags": [f"edited-{i}"]})

    def import_(i: int) -> httpx.Response:
        lines = b"\n".join(orjson.dumps({"messages": _qa(2000 + 10 * i + k)}) for k in range(5))
        return client.post(f"{base}/imports", files={"file": (f"imp{i}.jsonl", lines, "application/jsonl")},
                           data={"mode": "strict"})

    work = ([(upload, i) for i in range(8)] + [(edit, i) for i in range(8)]
            + [(import_, i) for i in range(4)])
    assert len(work) == 20
    results: list[tuple[str, int, str]] = [("", 0, "")] * len(work)
    barrier = threading.Barrier(len(work))

    def run(k: int) -> None:
        fn, i = work[k]
        barrier.wait()
        resp = fn(i)
        results[k] = (fn.__name__, resp.status_code, resp.text[:300])

    with httpx.Client(headers=lead.headers, timeout=60) as client:
        threads = [threading.Thread(target=run, args=(k,)) for k in range(len(work))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    failed = [r for r in results if r[1] not in (200, 201, 202)]
    assert not failed, failed
    for name, _code, body in results:
        if name == "upload":
            assert orjson.loads(body)["results"][0]["status_code"] == 201, body
    db.expire_all()
    from sqlalchemy import func, select

    from service.models import Document, ImportJob, Sample

    assert db.scalar(select(func.count()).select_from(Document).where(Document.project_id == project.id)) == 8
    edited = db.scalars(select(Sample.version).where(Sample.id.in_(sample_ids))).all()
    assert edited == [2] * 8
    jobs = db.scalars(select(ImportJob.status).where(ImportJob.project_id == project.id)).all()
    assert sorted(jobs) == ["succeeded"] * 4
