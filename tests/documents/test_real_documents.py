"""Parsing and chunking real documents written by others (Debian Reference, GPL-2+; see
fixtures/README.md): a technical manual as PDF and HTML, English and Chinese, plus a
scanned page made from one of its pages. These are the acceptance checks of issue 14."""

from __future__ import annotations

import io
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from service.documents import ocr, pdf
from service.documents.chunking import ChunkOut, chunk_text
from service.documents.parsing import ParsedDocument, ParseError, parse_document
from service.documents.quality import QualityThresholds, glued_words, quality_report

FIXTURES = Path(__file__).parent / "fixtures"
EN_PDF = FIXTURES / "debian-reference-en-excerpt.pdf"
ZH_PDF = FIXTURES / "debian-reference-zh-cn-excerpt.pdf"
EN_HTML = FIXTURES / "ch08.en.html"
ZH_HTML = FIXTURES / "ch08.zh-cn.html"
RUNNING_HEAD = re.compile(r"(?:Debian Reference|Debian 参考手册) (?:\d+ / \d+|[ivxlc]+)\b")


@pytest.fixture(scope="module")
def en_pdf() -> tuple[ParsedDocument, list[ChunkOut]]:
    doc = parse_document(EN_PDF, filename=EN_PDF.name)
    return doc, chunk_text(doc)


@pytest.fixture(scope="module")
def zh_pdf() -> tuple[ParsedDocument, list[ChunkOut]]:
    doc = parse_document(ZH_PDF, filename=ZH_PDF.name)
    return doc, chunk_text(doc)


def raw_pages(path: Path) -> list[str]:
    """What PDFium reads from each page, before any clean-up."""
    source = pdf.PdfiumDocument(path)
    try:
        return [source.page_text(i) for i in range(len(source))]
    finally:
        source.close()


def letters(text: str) -> str:
    """Letters and digits only: hyphens joined, spaces and line breaks ignored."""
    return "".join(ch for ch in text if ch.isalnum())


def page_text(doc: ParsedDocument, number: int) -> str:
    _, start, end = doc.pages[number - 1]
    return doc.text[start:end]


# --------------------------------------------------------------------------- English PDF


def test_english_pdf_words_keep_their_spaces(en_pdf) -> None:
    doc, chunks = en_pdf
    assert doc.metadata["pdf_engine"] == "pdfium"
    glued = [c for c in chunks if glued_words(c.text)]
    assert len(glued) < 0.01 * len(chunks), [glued_words(c.text) for c in glued]
    assert "the first thing you put in the pipe is the first thing to come out" in doc.text


def test_the_fixture_is_one_that_pypdf_glues() -> None:
    """Why PDFium: pypdf's extract_text loses the spaces of this manual's words."""
    from pypdf import PdfReader

    pages = [page.extract_text() for page in PdfReader(str(EN_PDF)).pages]
    assert sum(1 for text in pages if glued_words(text)) >= 0.5 * len(pages)


def test_english_pdf_running_headers_removed(en_pdf) -> None:
    doc, _ = en_pdf
    raw = raw_pages(EN_PDF)
    had = [n for n, text in enumerate(raw, start=1) if RUNNING_HEAD.search(text)]
    assert len(had) == len(raw)  # every page of the book has one
    still = [n for n in had if RUNNING_HEAD.search(page_text(doc, n))]
    assert len(still) <= 0.05 * len(had), still
    cleanup = doc.metadata["pdf_cleanup"]
    assert cleanup["furniture_pages"] == len(raw)
    assert "Debian Reference 13 / 233" in cleanup["furniture_examples"]


def test_english_pdf_toc_pages_are_left_out(en_pdf) -> None:
    doc, chunks = en_pdf
    assert doc.metadata["pdf_cleanup"]["toc_pages"] == [2, 3]
    assert page_text(doc, 2) == page_text(doc, 3) == ""
    assert not any(re.search(r"(?:\. ){4,}", c.text) for c in chunks)
    assert not any(c.page_start in (2, 3) for c in chunks)


def test_english_pdf_page_provenance_is_exact(en_pdf) -> None:
    doc, chunks = en_pdf
    raw = [letters(text) for text in raw_pages(EN_PDF)]
    assert [n for n, _, _ in doc.pages] == list(range(1, len(raw) + 1))
    for chunk in chunks:
        assert doc.text[chunk.char_start : chunk.char_end] == chunk.text
        span = "".join(raw[chunk.page_start - 1 : chunk.page_end])
        assert letters(chunk.text) in span, (chunk.ordinal, chunk.page_start)
    for number, text in enumerate(raw, start=1):  # each page's text stays on its page
        body = letters(page_text(doc, number))
        assert body in text


def test_english_pdf_hyphenation(en_pdf) -> None:
    doc, _ = en_pdf
    raw = "".join(raw_pages(EN_PDF))
    assert "capa\ufffebilities" in raw and "non\ufffedevelopers" in raw  # PDFium's markers
    assert "capabilities" in doc.text  # a word the typesetter broke: joined
    assert "non-developers" in doc.text  # a compound broken at its hyphen: kept
    assert "\ufffe" not in doc.text


def test_english_pdf_quality_report(en_pdf) -> None:
    doc, chunks = en_pdf
    report = quality_report(doc, chunks)
    assert report["warnings"] == []
    assert report["glued_chunk_share"] < 0.01
    assert report["pages"] == 10 and report["furniture_pages"] == 10
    assert report["toc_pages"] == [2, 3] and report["empty_pages"] == []
    assert 0 < report["furniture_share"] < 0.05
    assert report["replacement_chars"] == 0 and report["ocr_pages"] == []


# --------------------------------------------------------------------------- Chinese PDF


def test_chinese_pdf(zh_pdf) -> None:
    doc, chunks = zh_pdf
    assert not any(RUNNING_HEAD.search(page_text(doc, n)) for n in range(1, 7))
    assert doc.metadata["pdf_cleanup"]["toc_pages"] == [1]
    # TeX wraps Chinese lines anywhere, here inside the word 语法; the wrap is joined
    assert "语\n法" in raw_pages(ZH_PDF)[1].replace("\r\n", "\n")
    assert "语法功能" in page_text(doc, 2)
    assert "UNIX 的一个非常有影响力的创新" in doc.text  # Latin words keep their spaces
    assert quality_report(doc, chunks)["warnings"] == []
    raw = [letters(text) for text in raw_pages(ZH_PDF)]
    for chunk in chunks:
        assert letters(chunk.text) in "".join(raw[chunk.page_start - 1 : chunk.page_end])


# --------------------------------------------------------------------------- HTML


@pytest.mark.parametrize(
    ("path", "title"),
    [(EN_HTML, "Chapter 8. I18N and L10N"), (ZH_HTML, "第 8 章 国际化和本地化")],
)
def test_html_chapter_without_navigation(path: Path, title: str) -> None:
    doc = parse_document(path, filename=path.name)
    chunks = chunk_text(doc)
    assert chunks[0].text.startswith(f"# {title}\n\n")  # not the navigation table
    assert doc.headings[0][:2] == (1, title)
    assert doc.metadata["navigation_blocks_dropped"] >= 1  # the chapter's table of contents
    for chunk in chunks:
        body = [line for line in chunk.text.split("\n") if line and not line.startswith("#")]
        assert body, f"heading- or navigation-only chunk {chunk.ordinal}: {chunk.text[:80]!r}"
    for text in ("Table of Contents", "目录", "Prev", "Next", "Home"):
        assert f"\n{text}\n" not in f"\n{doc.text}\n"
    assert "8.1.1. Rationale for UTF-8 locale\n" not in doc.text.replace("### 8.1.1.", "")


def test_html_ordered_lists_keep_numbers_and_text_on_one_line() -> None:
    doc = parse_document(EN_HTML, filename=EN_HTML.name)
    assert "\n1. Select all required locale data to be compiled" in doc.text
    assert "\n2. Set the system wide default locale value" in doc.text
    assert "\n4. Relogin to user's account." in doc.text
    assert not re.search(r"(?m)^(?:-|\d+\.)\s*$", doc.text)  # no lone list markers
    zh = parse_document(ZH_HTML, filename=ZH_HTML.name)
    assert "\n1. 选择所有需要的语言环境数据编译为二进制形式" in zh.text


def test_html_code_is_fenced_never_a_heading() -> None:
    doc = parse_document(EN_HTML, filename=EN_HTML.name)
    assert "```\n# dpkg-reconfigure locales\n```" in doc.text
    assert not any("dpkg-reconfigure" in title for _, title, _ in doc.headings)
    for chunk in chunk_text(doc):
        assert "dpkg-reconfigure" not in " ".join(chunk.heading_path)


# --------------------------------------------------------------------------- scans


def scanned_copy(path: Path, page_index: int, out: Path) -> Path:
    """An image-only PDF of one real page, rendered by PDFium (a scan with no text layer)."""
    from PIL import Image
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    source = ocr.PageRenderer(path)
    try:
        image, _ = source.render(page_index, dpi=150)
    finally:
        source.close()
    picture = Image.open(io.BytesIO(image))
    width, height = picture.size[0] * 72 / 150, picture.size[1] * 72 / 150
    pdf_canvas = canvas.Canvas(str(out), pagesize=(width, height))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    buffer.seek(0)
    pdf_canvas.drawImage(ImageReader(buffer), 0, 0, width=width, height=height)
    pdf_canvas.showPage()
    pdf_canvas.save()
    return out


def test_scanned_real_page_is_ocrd_or_refused_with_a_reason(tmp_path: Path) -> None:
    path = scanned_copy(EN_PDF, 4, tmp_path / "scan.pdf")
    assert pdf.PdfiumDocument(path).page_text(0).strip() == ""
    try:
        engine = ocr.find_engine()
    except ocr.OcrUnavailable:
        engine = None
    if engine is None:
        with pytest.raises(ParseError, match="no text layer .*OCR is unavailable"):
            parse_document(path, filename="scan.pdf")
        return
    doc = parse_document(path, filename="scan.pdf")
    assert doc.metadata["ocr"]["pages"] == [1]
    assert "named pipe" in doc.text.lower()
    report = quality_report(doc, chunk_text(doc))
    assert report["ocr_pages"] == [1]
    assert any("read by OCR" in w for w in report["warnings"])


# --------------------------------------------------------------------------- clean-up units


def test_hyphenation_rules() -> None:
    pages, joined = pdf.join_hyphenation(
        [
            "an exam-\nple of a well-\nknown and well-known thing, non\ufffeexistent,",
            "Anglo-\nSaxon, e-\nmail, x86-\n64, ls -\n-l, and a dash -\nhere",
        ]
    )
    assert pages == [
        "an example of a well-known and well-known thing, non-existent,",
        "Anglo-Saxon, e-mail, x86-\n64, ls -\n-l, and a dash -\nhere",
    ]
    assert joined == 1


def test_ligatures_and_markers_normalised() -> None:
    assert pdf.normalize_page("\ufb01le \ufb02ow e\ufb03cient\x00 \r\nnext  \r\n") == (
        "file flow efficient\nnext"
    )
    assert pdf.normalize_page("exam\x02\nple") == "exam\ufffeple"


WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima".split()  # noqa: SIM905


def _book(pages: int) -> list[str]:
    out = []
    for n in range(1, pages + 1):
        head = "Chapter 2\nFirst steps\n" if n == 4 else ""
        running = "Part One" if n % 2 else "Getting started"
        out.append(f"My Manual {n} / {pages}\n{running}\n{head}Text about {WORDS[n - 1]}.\n- {n} -")
    out[6] = out[6].replace("Chapter 2", "Chapter 3")
    return out


def test_furniture_removed_but_chapter_headings_kept() -> None:
    report = pdf.Cleanup()
    cleaned = pdf.strip_furniture(_book(12), report)
    assert cleaned[0] == "Text about alpha."
    assert cleaned[3] == "Chapter 2\nFirst steps\nText about delta."
    assert all("My Manual" not in page and "- " not in page for page in cleaned)
    assert report.furniture_pages == list(range(1, 13))
    assert report.furniture_lines == 12 * 3


def test_furniture_needs_three_pages() -> None:
    pages = ["Title 1\nbody one", "Title 2\nbody two"]
    assert pdf.strip_furniture(pages, pdf.Cleanup()) == pages


def test_dot_leaders_and_toc_pages() -> None:
    toc = "\n".join(f"{i}.1 Section {i} . . . . . . . . . . {i * 3}" for i in range(1, 9))
    body = "Some text.\nSee below . . . . . . . . 12\nMore text."
    report = pdf.Cleanup()
    assert pdf.drop_toc([f"Contents\n{toc}", body], report) == ["", "Some text.\nMore text."]
    assert report.toc_pages == [1] and report.dot_leader_lines == 1


def test_garbled_text_layer_detected() -> None:
    assert pdf.looks_garbled("\ue001\ue002\ue003 \ue004\ue005\ue006\ufffd\ufffd" * 4)
    assert not pdf.looks_garbled("An ordinary line of text with a \ufffd in it.")
    assert not pdf.looks_garbled("\ufffd")  # too short to judge


# --------------------------------------------------------------------------- quality report


def test_glued_words_ignore_urls_code_and_chinese() -> None:
    text = (
        "Thenoncompatibleeffectscausedbyabove the rest.\n"
        "https://example.org/averyveryveryverylongpathsegmentname\n"
        "```\nsupercalifragilisticexpialidociousxyz\n```\n"
        "中文没有空格所以这一句很长很长很长很长很长很长很长很长很长很长很长很长"
    )
    assert glued_words(text) == ["Thenoncompatibleeffectscausedbyabove"]


def test_quality_warnings_past_thresholds() -> None:
    glued = "Thenoncompatibleeffectscausedbyabove"
    doc = ParsedDocument(
        text=f"{glued}\n\nfine text \ufffd",
        format="pdf",
        pages=[(1, 0, len(glued)), (2, len(glued) + 2, len(glued) + 2)],
        metadata={"ocr": {"pages": [1]}, "pdf_cleanup": {"furniture_chars": 0}},
    )
    chunks = [SimpleNamespace(text=glued), SimpleNamespace(text="fine text \ufffd")]
    report = quality_report(doc, chunks)
    assert report["glued_chunks"] == 1 and report["glued_chunk_share"] == 0.5
    assert report["empty_pages"] == [2]
    assert len(report["warnings"]) == 4, report["warnings"]
    assert report["warnings"][0].startswith("1 of 2 chunks (50.0%) hold words without spaces")
    relaxed = QualityThresholds(
        glued_chunk_share=1, replacement_share=1, empty_page_share=1, ocr_page_share=1
    )
    assert quality_report(doc, chunks, relaxed)["warnings"] == []
    with pytest.raises(ValueError, match="between 0 and 1"):
        QualityThresholds(glued_chunk_share=2)


def test_document_read_exposes_the_quality_report(en_pdf) -> None:
    from datetime import UTC, datetime

    from service.documents.schemas import DocumentRead

    doc, chunks = en_pdf
    report = quality_report(doc, chunks)
    now = datetime.now(UTC)
    row = SimpleNamespace(
        id=1, project_id=1, filename="x.pdf", content_type="application/pdf", format="pdf",
        size_bytes=1, sha256="0" * 64, status="parsed", error=None, page_count=10,
        chunk_count=len(chunks), created_at=now, updated_at=now,
        meta={"parsed": doc.metadata, "quality": report},
    )  # fmt: skip
    read = DocumentRead.model_validate(row)
    assert read.quality is not None
    assert read.quality.toc_pages == [2, 3] and read.quality.warnings == []
    assert read.model_dump()["quality"]["furniture_pages"] == 10
    unchunked = DocumentRead.model_validate(SimpleNamespace(**{**vars(row), "meta": {}}))
    assert unchunked.quality is None


def test_garbled_text_layer_is_ocrd_or_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page whose text layer is unmapped glyphs: OCR reads its image (here without
    Tesseract: the page is named in a warning and in the quality report)."""
    real = pdf.PdfiumDocument.page_text

    def garbled_second_page(self: pdf.PdfiumDocument, index: int) -> str:
        return (
            "\ue011\ue012\ue013 \ue014\ue015\ufffd\ufffd\x07" * 20
            if index == 1
            else real(self, index)
        )

    monkeypatch.setattr(pdf.PdfiumDocument, "page_text", garbled_second_page)
    monkeypatch.setattr(ocr, "TESSERACT", "annotune-no-such-tesseract")
    doc = parse_document(ZH_PDF, filename=ZH_PDF.name)
    assert doc.metadata["garbled_pages"] == [2]
    [warning] = doc.metadata["warnings"]
    assert warning.startswith("page 2: garbled text layer") and "OCR is unavailable" in warning
    report = quality_report(doc, chunk_text(doc))
    assert report["garbled_pages"] == [2]
    assert any("garbled text layer" in w for w in report["warnings"])
