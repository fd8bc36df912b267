"""Parse progress: the parsers count their units through one callback (``parsing.Progress``), the
parse runner writes it every few pages under its lease, the API and the Documents pages show it.

The real PDF is the Debian Reference excerpt (tests/documents/fixtures, 10 pages) repeated to
60 pages, so the count has somewhere to go and the parse still takes well under a second.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event

from service.core.db import get_engine, utcnow
from service.documents import parsing
from service.models import Document
from workers import jobs as kit
from workers.documents import runner

FIXTURES = Path(__file__).parent / "fixtures"
PAGES = 60


def many_page_pdf(path: Path, pages: int = PAGES) -> Path:
    """The real 10-page excerpt, its pages repeated until there are ``pages`` of them."""
    from pypdf import PdfReader, PdfWriter

    source = PdfReader(str(FIXTURES / "debian-reference-en-excerpt.pdf"))
    writer = PdfWriter()
    for i in range(pages):
        writer.add_page(source.pages[i % len(source.pages)])
    with path.open("wb") as out:
        writer.write(out)
    return path


class Recorder:
    """A real ``on_progress`` callback that keeps what it hears."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))


def test_a_pdf_counts_its_pages_and_ends_at_the_total(tmp_path):
    pdf = many_page_pdf(tmp_path / "manual.pdf")
    heard = Recorder()
    doc = parsing.parse_document(pdf, filename="manual.pdf", on_progress=heard)
    assert doc.page_count == PAGES
    assert heard.calls == [(n, PAGES) for n in range(PAGES + 1)]


@pytest.mark.parametrize("name, body", [
    ("notes.md", b"# Notes\n\nSome text.\n"),
    ("page.html", b"<html><body>" + b"<p>paragraph</p>" * 1200 + b"</body></html>"),
])
def test_other_formats_end_at_their_total_too(tmp_path, name, body):
    path = tmp_path / name
    path.write_bytes(body)
    heard = Recorder()
    parsing.parse_document(path, filename=name, on_progress=heard)
    done, total = heard.calls[-1]
    assert done == total >= 1
    assert [d for d, _ in heard.calls] == sorted(d for d, _ in heard.calls)
    if name.endswith(".html"):  # 1,200 paragraphs: counted as they are written, not only at the end
        assert total > 1200 and any(0 < d < total for d, _ in heard.calls)


def test_what_the_callback_raises_stops_the_parse_unchanged(tmp_path):
    """A lost lease (raised from the runner's callback) is not reported as a corrupt file."""
    pdf = many_page_pdf(tmp_path / "manual.pdf", pages=12)

    def lost(done: int, total: int) -> None:
        if done == 5:
            raise kit.LeaseLost("document 1")

    with pytest.raises(kit.LeaseLost):
        parsing.parse_document(pdf, filename="manual.pdf", on_progress=lost)


def test_the_writer_writes_every_few_pages_not_every_page():
    """Throttling on a clock of the test's own: the first count at once, then only when both
    2% of the total and half a second have gone by."""
    now = [0.0]
    writes: list[dict[str, int]] = []

    def write(**values: int) -> bool:
        writes.append(values)
        return True

    progress = runner.ProgressWriter(write, min_seconds=0.5, min_share=0.02, clock=lambda: now[0])
    progress(0, 1000)
    for done in range(1, 1001):
        now[0] += 0.01  # 100 pages a second: 10 s in all
        progress(done, 1000)
    assert writes[0] == {"progress_done": 0, "progress_total": 1000}
    assert 15 <= len(writes) <= 21, len(writes)  # one per 0.5 s, not 1,000
    assert progress.seen == (1000, 1000)
    with pytest.raises(kit.LeaseLost):
        runner.ProgressWriter(lambda **_: False)(0, 10)  # a lost lease stops the parse


def _upload(db, factories, path: Path) -> tuple[int, int, int]:
    """A stored, uploaded document whose parse has not run (its task is not sent)."""
    from service.documents import service as documents_service

    user = factories.make_user(db)
    project = factories.make_project(db, user)
    with path.open("rb") as stream:
        doc_id = documents_service.upload_document(
            db, project_id=project.id, filename=path.name, content_type="application/pdf",
            stream=stream, actor_id=user.id)["document_id"]
    db.info.pop("annotune_pending_tasks", None)
    db.commit()
    return user.id, project.id, doc_id


def test_the_runner_records_progress_as_it_parses_a_real_pdf(db, factories, tmp_path, monkeypatch):
    _, _, doc_id = _upload(db, factories, many_page_pdf(tmp_path / "manual.pdf"))
    monkeypatch.setattr(runner, "PROGRESS_MIN_SECONDS", 0.0)  # every 2% of the pages: no clock
    written: list[tuple[int, int]] = []

    def record(conn, clause, multiparams, params, execution_options):
        """The progress each UPDATE of the documents row writes, as the database gets it."""
        if getattr(clause, "is_dml", False) and getattr(clause, "table", None) is not None \
                and clause.table.name == "documents":
            values = clause.compile().params  # an ORM flush's UPDATE binds every column: None
            if values.get("progress_done") is not None:
                written.append((values["progress_done"], values["progress_total"]))

    engine = get_engine()
    event.listen(engine, "before_execute", record)
    try:
        result = runner.parse(doc_id)
    finally:
        event.remove(engine, "before_execute", record)
    assert result["status"] == "parsed", result
    db.expire_all()
    doc = db.get(Document, doc_id)
    assert doc.page_count == PAGES
    assert (doc.progress_done, doc.progress_total) == (PAGES, PAGES)
    assert written[0] == (0, PAGES) and written[-1] == (PAGES, PAGES)  # the last one: the seal
    done = [d for d, _ in written]
    assert done == sorted(done) and {t for _, t in written} == {PAGES}
    between = [d for d in done if 0 < d < PAGES]
    assert 20 <= len(between) <= 30  # every 2 pages (2% of 60), not every page


def test_the_api_and_the_pages_show_parse_progress(client, db, factories):
    owner = factories.make_actor(db)
    h = owner.headers
    pid = client.post("/api/v1/projects", json={"name": "progress"}, headers=h).json()["id"]
    doc = Document(project_id=pid, filename="big.pdf", sha256="e" * 64, storage_path="/nonexistent",
                   status="parsing", format="pdf", size_bytes=4096, progress_total=240,
                   progress_done=60, started_at=utcnow() - timedelta(seconds=20))
    db.add(doc)
    db.commit()
    got = client.get(f"/api/v1/projects/{pid}/documents/{doc.id}", headers=h).json()
    assert (got["progress_done"], got["progress_total"]) == (60, 240) and got["started_at"]
    listed = client.get(f"/api/v1/projects/{pid}/documents", headers=h).json()["items"][0]
    assert (listed["progress_done"], listed["progress_total"]) == (60, 240)
    url = f"/api/v1/projects/{pid}/documents/{doc.id}"
    for page in (f"/projects/{pid}/documents", f"/projects/{pid}/documents/{doc.id}"):
        html = client.get(page, headers=h).text
        assert (f'data-job-kind="parse" data-job-url="{url}"' in html
                and 'data-init-done="60" data-init-total="240"' in html
                and '<progress max="240" value="60">' in html), page
    doc.status, doc.progress_done = "parsed", 240
    db.commit()
    assert 'data-job-kind="parse"' not in client.get(f"/projects/{pid}/documents", headers=h).text
