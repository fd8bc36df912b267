"""In Chromium on the embedded default (SQLite): 13 files of different formats chosen at once
all become documents, and the Documents page follows them from upload to parsed without a reload."""
from __future__ import annotations

from pathlib import Path

from tests.documents.test_parsing import make_docx, make_epub, make_pdf
from tests.support.browser import browser, login, needs_chromium  # noqa: F401  (fixture)
from tests.support.live_server import live_server  # noqa: F401  (fixture)

pytestmark = needs_chromium


def thirteen_files(tmp: Path) -> list[Path]:
    files = [make_pdf(tmp / "manual.pdf", [["Installation guide", "Run the wizard."], ["Page two text."]]),
             make_docx(tmp / "report.docx"), make_epub(tmp / "book.epub")]
    texts = {
        "notes.md": "# Notes\n\nSome *markdown* text.\n", "readme.markdown": "# Readme\n\nMore text.\n",
        "page.html": "<html><body><h1>Title</h1><p>Paragraph.</p></body></html>",
        "page2.htm": "<html><body><h2>Other</h2><p>Second page.</p></body></html>",
        "plain.txt": "Plain text file.\n", "中文.txt": "中文文本，用于测试。\n",
        "log.text": "More plain text.\n", "faq.md": "# FAQ\n\n## Q\n\nA.\n",
        "guide.md": "# Guide\n\nStep one.\n", "extra.html": "<p>Just a paragraph.</p>",
    }
    for name, text in texts.items():
        (tmp / name).write_text(text, encoding="utf-8")
        files.append(tmp / name)
    assert len(files) == 13
    return files


def test_thirteen_files_at_once_and_the_page_updates_live(browser, live_server, db, factories, tmp_path):  # noqa: F811
    from service.models import Document, User

    lead = factories.make_actor(db)
    project = factories.make_project(db, db.get(User, lead.user_id), name="Uploads")
    page = login(browser, live_server, lead.email)
    page.goto(f"/projects/{project.id}/documents")
    assert "No documents yet." in page.inner_text("[data-testid=documents]")
    loaded_at = page.evaluate("() => performance.timeOrigin")
    page.set_input_files("#file-input", [str(p) for p in thirteen_files(tmp_path)])
    # arrow functions, not bare expressions: Playwright evaluates those with eval(), which the
    # pages' CSP (no 'unsafe-eval') refuses
    page.wait_for_function("() => document.querySelectorAll('#upload-list li[data-doc]').length === 13",
                           timeout=60_000)
    assert page.locator("#upload-list .danger").count() == 0, page.inner_text("#upload-list")
    # the table fills in and reaches "parsed" for every file, with no navigation
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=documents] tr[data-status=parsed]')"
        ".length === 13",
        timeout=60_000)
    assert page.evaluate("() => performance.timeOrigin") == loaded_at
    db.expire_all()
    docs = db.query(Document).filter_by(project_id=project.id).all()
    assert len(docs) == 13 and {d.status for d in docs} == {"parsed"}, [(d.filename, d.error) for d in docs]
    assert page.js_errors == []


def test_a_document_still_parsing_turns_parsed_on_the_open_page(browser, live_server, db, factories):  # noqa: F811
    from service.models import Document, User

    lead = factories.make_actor(db)
    project = factories.make_project(db, db.get(User, lead.user_id), name="Live")
    doc = Document(project_id=project.id, filename="slow.pdf", sha256="f" * 64, storage_path="/nonexistent",
                   status="parsing", format="pdf", size_bytes=2048)
    db.add(doc)
    db.commit()
    page = login(browser, live_server, lead.email)
    page.goto(f"/projects/{project.id}/documents")
    page.wait_for_selector(f"tr[data-doc='{doc.id}'][data-status=parsing]")
    doc.status, doc.chunk_count = "parsed", 4   # what the worker does meanwhile
    db.commit()
    page.wait_for_selector(f"tr[data-doc='{doc.id}'][data-status=parsed]")
    assert page.locator(f"tr[data-doc='{doc.id}'] td").nth(5).inner_text() == "4"
    assert page.js_errors == []


# the bar of a document's parse: its value and max (null while indeterminate), and its ETA text
PARSE_BAR = """(url) => {
  const el = document.querySelector(`[data-job-kind=parse][data-job-url="${url}"]`);
  if (!el) return null;
  const bar = el.querySelector("progress");
  return {value: bar.hasAttribute("value") ? bar.value : null, max: bar.max,
          eta: el.querySelector(".eta").textContent};
}"""


def test_a_parse_shows_a_bar_with_an_eta_that_moves_without_a_reload(browser, live_server, db, factories):  # noqa: F811
    """What the parse runner writes (progress_done of progress_total, every few pages) moves the
    bar on the Documents page (from the REST list) and on the document's own page (jobs_live.js
    polls the document), with an ETA from the rate since the parse started."""
    from datetime import timedelta

    from service.core.db import utcnow
    from service.models import Document, User

    lead = factories.make_actor(db)
    project = factories.make_project(db, db.get(User, lead.user_id), name="Progress")
    doc = Document(project_id=project.id, filename="manual.pdf", sha256="d" * 64,
                   storage_path="/nonexistent", status="parsing", format="pdf", size_bytes=4096,
                   progress_total=120, progress_done=30, started_at=utcnow() - timedelta(seconds=10))
    db.add(doc)
    db.commit()
    url = f"/api/v1/projects/{project.id}/documents/{doc.id}"
    page = login(browser, live_server, lead.email)
    page.goto(f"/projects/{project.id}/documents")
    page.evaluate("() => { window.__notReloaded = true; }")
    first = page.evaluate(PARSE_BAR, url)
    assert (first["value"], first["max"]) == (30, 120)
    assert first["eta"].startswith("about ") and first["eta"].endswith(" left")  # 30 s at 3 pages/s
    doc.progress_done = 90  # what the runner writes meanwhile
    db.commit()
    page.wait_for_function(f"() => ({PARSE_BAR})({url!r})?.value === 90", timeout=10_000)
    doc.status, doc.progress_done, doc.chunk_count = "parsed", 120, 7
    db.commit()
    page.wait_for_selector(f"tr[data-doc='{doc.id}'][data-status=parsed]")
    assert page.evaluate(PARSE_BAR, url) is None  # a parsed document shows no bar
    assert page.evaluate("() => window.__notReloaded") is True

    doc.status, doc.progress_done = "parsing", 40
    db.commit()
    page.goto(f"/projects/{project.id}/documents/{doc.id}")
    assert page.evaluate(PARSE_BAR, url)["value"] == 40
    doc.progress_done = 100
    db.commit()
    page.wait_for_function(f"() => ({PARSE_BAR})({url!r})?.value === 100", timeout=10_000)
    assert page.js_errors == []
