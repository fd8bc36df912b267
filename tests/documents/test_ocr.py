"""OCR of scanned PDF pages: real PDFs built here (Pillow image as the page's only content,
next to pages with a text layer), read by the real ``tesseract`` program."""

from __future__ import annotations

import functools
import glob
import importlib.util
import io
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from service.documents import ocr
from service.documents.parsing import ParsedDocument, ParseError, ParseLimits, parse_document

TESSERACT_PATH = shutil.which(ocr.TESSERACT)  # before any test points ocr.TESSERACT elsewhere
HAVE_TESSERACT = TESSERACT_PATH is not None
HAVE_PDFIUM = importlib.util.find_spec("pypdfium2") is not None
if not HAVE_TESSERACT:
    NO_OCR = (
        "tesseract is not installed "
        "(apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim)"
    )
elif not HAVE_PDFIUM:
    NO_OCR = "pypdfium2 is not installed (it renders the pages to OCR)"
else:
    NO_OCR = ""
needs_tesseract = pytest.mark.skipif(bool(NO_OCR), reason=NO_OCR)

A4_300DPI = (2480, 3508)
ENGLISH = [
    "Scanned Lease Agreement",
    "The tenant shall pay the rent monthly.",
    "Signed in Shanghai.",
]
ENGLISH_WORDS = ["scanned", "lease", "agreement", "tenant", "rent", "monthly", "shanghai"]
CHINESE = "租赁合同由双方签署生效"
TEXT_PAGES = {
    1: ["Cover page with a real text layer.", "Pack my box with five dozen liquor jugs."],
    3: ["Appendix with a real text layer too.", "How vexingly quick daft zebras jump."],
}
MISSING_BINARY = "annotune-test-no-such-tesseract"


@functools.cache
def _installed_languages() -> frozenset[str]:
    if TESSERACT_PATH is None:
        return frozenset()
    listed = subprocess.run(
        [TESSERACT_PATH, "--list-langs"], capture_output=True, text=True, timeout=30, check=True
    )
    return frozenset(line.strip() for line in listed.stdout.splitlines()[1:] if line.strip())


def _font(size: int):
    from PIL import ImageFont

    for path in (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ):
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def _cjk_font(size: int):
    """A font with Chinese glyphs (Debian: fonts-wqy-microhei, fonts-noto-cjk), or None."""
    from PIL import ImageFont

    patterns = ("wqy*/*.tt[cf]", "*/Noto*CJK*", "*/*/Noto*CJK*", "*/Droid*Fallback*")
    for pattern in patterns:
        for path in sorted(glob.glob(f"/usr/share/fonts/**/{pattern}", recursive=True)):
            try:
                return ImageFont.truetype(path, size)
            except OSError:
                continue
    return None


def scan_image(lines: list[str], *, cjk_line: str | None = None, size: int = 64):
    """A white A4 page at 300 dpi with big black text, as a scanner would produce it."""
    from PIL import Image, ImageDraw

    image = Image.new("L", A4_300DPI, 255)
    draw = ImageDraw.Draw(image)
    font, y = _font(size), 250
    for line in lines:
        draw.text((200, y), line, font=font, fill=0)
        y += int(size * 1.8)
    if cjk_line:
        draw.text((200, y), cjk_line, font=_cjk_font(size + 8), fill=0)
    return image


def make_scanned_pdf(path: Path, pages: list[object]) -> Path:
    """One page per item: a list of strings is a page with a text layer, a Pillow image is a
    scanned page (the image is the page's only content, no text layer)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(path), pagesize=A4)
    for page in pages:
        if isinstance(page, list):
            y = 800
            for line in page:
                pdf.drawString(72, y, line)
                y -= 18
        else:
            buffer = io.BytesIO()
            page.save(buffer, format="PNG")
            buffer.seek(0)
            pdf.drawImage(ImageReader(buffer), 0, 0, width=A4[0], height=A4[1])
        pdf.showPage()
    pdf.save()
    return path


def chinese_available() -> str | None:
    """Why the Chinese line cannot be tested here, or None when it can."""
    if "chi_sim" not in _installed_languages():
        return "tesseract has no chi_sim (apt-get install tesseract-ocr-chi-sim)"
    if _cjk_font(72) is None:
        return "no font with Chinese glyphs to draw the scan (apt-get install fonts-wqy-microhei)"
    return None


def mixed_pdf(path: Path) -> Path:
    """Page 1 and 3 have a text layer; page 2 is a scan (with a Chinese line when possible)."""
    cjk = CHINESE if chinese_available() is None else None
    return make_scanned_pdf(path, [TEXT_PAGES[1], scan_image(ENGLISH, cjk_line=cjk), TEXT_PAGES[3]])


def page_text(doc: ParsedDocument, page_no: int) -> str:
    (start, end) = next((s, e) for n, s, e in doc.pages if n == page_no)
    return doc.text[start:end]


def found_words(text: str, words: list[str]) -> list[str]:
    lowered = text.lower()
    return [w for w in words if w in lowered]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> ParsedDocument:
    if NO_OCR:
        pytest.skip(NO_OCR)
    path = mixed_pdf(tmp_path_factory.mktemp("ocr") / "mixed.pdf")
    return parse_document(path, filename="contract.pdf")


# --------------------------------------------------------------------------- with tesseract


@needs_tesseract
def test_scanned_page_is_ocrd_and_text_pages_are_not(mixed: ParsedDocument) -> None:
    assert [n for n, _, _ in mixed.pages] == [1, 2, 3]
    scanned = page_text(mixed, 2)
    found = found_words(scanned, ENGLISH_WORDS)
    # tolerant: OCR may misread one word, never most of them
    assert len(found) >= len(ENGLISH_WORDS) - 1, (found, scanned)
    for page_no in (1, 3):
        text = page_text(mixed, page_no)
        assert text == "\n".join(TEXT_PAGES[page_no])  # the text layer, untouched
        assert not found_words(text, ["lease", "tenant", "monthly"])
    info = mixed.metadata["ocr"]
    assert info["pages"] == [2]
    assert info["engine"].startswith("tesseract ")
    assert "eng" in info["languages"]
    assert set(info["languages"]) <= set(ocr.OCR_LANGUAGES)
    assert info["dpi"] == ocr.OCR_DPI
    assert "skipped_pages" not in info and "warnings" not in mixed.metadata


@needs_tesseract
def test_chinese_line_on_scanned_page(mixed: ParsedDocument) -> None:
    why = chinese_available()
    if why:
        pytest.skip(why)
    assert "chi_sim" in mixed.metadata["ocr"]["languages"]
    scanned = page_text(mixed, 2)
    hits = sum(ch in scanned for ch in CHINESE)
    assert hits >= len(CHINESE) - 2, scanned
    assert not re.search(r"[\u4e00-\u9fff] +[\u4e00-\u9fff]", scanned), scanned  # no gaps


@needs_tesseract
def test_chunks_of_ocrd_page_carry_its_page_number(mixed: ParsedDocument) -> None:
    from service.documents.chunking import ChunkSettings, chunk_text

    chunks = chunk_text(mixed, ChunkSettings(strategy="recursive", max_chars=60))
    pages_of = {}
    for chunk in chunks:
        assert mixed.text[chunk.char_start : chunk.char_end] == chunk.text
        for word in ("tenant", "liquor", "zebras"):
            if word in chunk.text.lower():
                pages_of[word] = (chunk.page_start, chunk.page_end)
    assert pages_of == {"tenant": (2, 2), "liquor": (1, 1), "zebras": (3, 3)}


@needs_tesseract
def test_fully_scanned_pdf_is_parsed(tmp_path: Path) -> None:
    path = make_scanned_pdf(
        tmp_path / "scan.pdf", [scan_image(ENGLISH[:1]), scan_image(ENGLISH[1:])]
    )
    doc = parse_document(path, filename="scan.pdf")
    assert doc.metadata["ocr"]["pages"] == [1, 2]
    assert "agreement" in page_text(doc, 1).lower()
    assert "tenant" in page_text(doc, 2).lower()


@needs_tesseract
def test_blank_scan_is_ocrd_and_refused_clearly(tmp_path: Path) -> None:
    path = make_scanned_pdf(tmp_path / "blank.pdf", [scan_image([])])
    with pytest.raises(ParseError, match=r"no text layer and OCR found no text .* page\(s\) 1"):
        parse_document(path, filename="blank.pdf")


@needs_tesseract
def test_ocr_page_timeout_warns_and_keeps_the_rest(tmp_path: Path) -> None:
    path = mixed_pdf(tmp_path / "mixed.pdf")
    doc = parse_document(path, filename="m.pdf", limits=ParseLimits(ocr_page_seconds=0.001))
    assert page_text(doc, 1) == "\n".join(TEXT_PAGES[1])
    assert page_text(doc, 2) == ""
    assert doc.metadata["ocr"]["skipped_pages"] == [2]
    assert doc.metadata["ocr"]["pages"] == []
    [warning] = doc.metadata["warnings"]
    assert warning.startswith("page 2: no text layer; OCR timed out after 0.001 s")


@needs_tesseract
def test_ocr_is_bounded_by_the_file_time_budget(tmp_path: Path) -> None:
    # a dense page: OCR takes ~2 s on one core, far more than the budget left for it
    dense = [f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(45)]
    path = make_scanned_pdf(tmp_path / "dense.pdf", [["A text page."], scan_image(dense, size=40)])
    started = time.monotonic()
    with pytest.raises(ParseError, match=r"time budget of 0\.5 s \((OCR of )?PDF page 2 of 2\)"):
        parse_document(path, filename="dense.pdf", limits=ParseLimits(max_seconds=0.5))
    assert time.monotonic() - started < 1.5  # tesseract was killed, not waited for


# --------------------------------------------------------------------------- without tesseract


def test_without_tesseract_the_text_pages_parse_and_the_scan_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ocr, "TESSERACT", MISSING_BINARY)
    path = mixed_pdf(tmp_path / "mixed.pdf")
    doc = parse_document(path, filename="contract.pdf")
    assert [n for n, _, _ in doc.pages] == [1, 2, 3]
    assert page_text(doc, 1) == "\n".join(TEXT_PAGES[1])
    assert page_text(doc, 2) == ""
    assert page_text(doc, 3) == "\n".join(TEXT_PAGES[3])
    [warning] = doc.metadata["warnings"]
    assert warning.startswith("page 2: no text layer (scanned image?) and OCR is unavailable: ")
    assert MISSING_BINARY in warning and "install tesseract-ocr" in warning
    assert doc.metadata["ocr"] == {
        "engine": None,
        "languages": [],
        "dpi": None,
        "pages": [],
        "skipped_pages": [2],
        "unavailable": f"{MISSING_BINARY} not found on PATH",
    }


def test_without_tesseract_a_fully_scanned_pdf_is_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ocr, "TESSERACT", MISSING_BINARY)
    path = make_scanned_pdf(tmp_path / "scan.pdf", [scan_image(ENGLISH)] * 3)
    with pytest.raises(ParseError) as info:
        parse_document(path, filename="scan.pdf")
    assert info.value.reason.startswith(
        "PDF has no text layer (scanned images on page(s) 1-3) and OCR is unavailable: "
        f"{MISSING_BINARY} not found on PATH; install tesseract-ocr"
    )


def test_text_pages_and_blank_pages_never_need_ocr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ocr, "TESSERACT", MISSING_BINARY)
    path = make_scanned_pdf(tmp_path / "plain.pdf", [TEXT_PAGES[1], [], TEXT_PAGES[3]])
    doc = parse_document(path, filename="plain.pdf")
    assert "ocr" not in doc.metadata and "warnings" not in doc.metadata
    assert page_text(doc, 2) == ""


def test_needs_ocr_threshold() -> None:
    assert ocr.needs_ocr("")
    assert ocr.needs_ocr("  12 \n")
    assert ocr.needs_ocr("x" * (ocr.MIN_TEXT_CHARS - 1) + " \n ")
    assert not ocr.needs_ocr("x" * ocr.MIN_TEXT_CHARS)
    assert not ocr.needs_ocr("合同" * ocr.MIN_TEXT_CHARS)


def test_tidy_joins_hanzi_and_drops_form_feeds() -> None:
    raw = "租 赁 合 同 由 双方 签署\n\n\n\nThe  tenant pays. \n第 1 条\f"
    assert ocr.tidy(raw) == "租赁合同由双方签署\n\nThe  tenant pays.\n第 1 条"


# --------------------------------------------------------------------------- through the API


@pytest.fixture
def lead(db, factories, client):
    owner = factories.make_actor(db)
    resp = client.post("/api/v1/projects", json={"name": "scans"}, headers=owner.headers)
    return owner, resp.json()["id"]


def _upload(client, owner, pid, path: Path) -> dict:
    files = [("files", (path.name, io.BytesIO(path.read_bytes()), "application/pdf"))]
    result = client.post(
        f"/api/v1/projects/{pid}/documents", headers=owner.headers, files=files
    ).json()["results"][0]
    assert result["status_code"] == 201, result
    return client.get(
        f"/api/v1/projects/{pid}/documents/{result['document_id']}", headers=owner.headers
    ).json()


@needs_tesseract
def test_api_shows_ocrd_pages_and_chunk_pages(client, lead, tmp_path: Path) -> None:
    owner, pid = lead
    chunking = {"chunking": {"strategy": "recursive", "max_chars": 60}}
    client.patch(f"/api/v1/projects/{pid}", headers=owner.headers, json={"settings": chunking})
    doc = _upload(client, owner, pid, mixed_pdf(tmp_path / "contract.pdf"))
    assert doc["status"] == "parsed" and doc["page_count"] == 3
    assert doc["ocr"]["pages"] == [2] and doc["warnings"] == []
    chunks = client.get(
        f"/api/v1/projects/{pid}/documents/{doc['id']}/chunks", headers=owner.headers
    ).json()["items"]
    [tenant] = [c for c in chunks if "tenant" in c["text"].lower()]
    assert (tenant["page_start"], tenant["page_end"]) == (2, 2)
    page = client.get(f"/projects/{pid}/documents/{doc['id']}", headers=owner.headers)
    assert page.status_code == 200 and 'data-testid="ocr"' in page.text
    assert "read page(s) 2" in page.text and 'data-testid="parse-warning"' not in page.text


def test_api_parses_without_tesseract_and_shows_the_warning(
    client, lead, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ocr, "TESSERACT", MISSING_BINARY)
    owner, pid = lead
    doc = _upload(client, owner, pid, mixed_pdf(tmp_path / "contract.pdf"))
    assert doc["status"] == "parsed" and doc["error"] is None
    assert doc["ocr"]["skipped_pages"] == [2] and doc["ocr"]["pages"] == []
    [warning] = doc["warnings"]
    assert "page 2" in warning and "OCR is unavailable" in warning
    page = client.get(f"/projects/{pid}/documents/{doc['id']}", headers=owner.headers)
    assert page.status_code == 200 and page.text.count('data-testid="parse-warning"') == 1
    assert "OCR is unavailable" in page.text


def _cover_pdf(path: Path, *, with_rule: bool) -> Path:
    """A manual's cover: one 200 x 100 pt picture of a word on a white A4 page (and, with
    ``with_rule``, a drawn line, as text converted to outlines would be)."""
    from PIL import Image, ImageDraw
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    logo = Image.new("L", (834, 417), 255)  # 200 x 100 pt at 300 dpi
    ImageDraw.Draw(logo).text((60, 120), "annotune", font=_font(150), fill=0)
    buffer = io.BytesIO()
    logo.save(buffer, format="PNG")
    buffer.seek(0)
    pdf = canvas.Canvas(str(path), pagesize=A4)
    pdf.drawImage(ImageReader(buffer), 200, 500, width=200, height=100)
    if with_rule:
        pdf.line(72, 100, 520, 100)
    pdf.showPage()
    pdf.save()
    return path


def _pnm_size(image: bytes) -> tuple[int, int]:
    width, height = image.split(b"\n")[1].split()
    return int(width), int(height)


@pytest.mark.skipif(not HAVE_PDFIUM, reason="pypdfium2 is not installed")
def test_a_page_of_nothing_but_a_small_image_is_rendered_only_where_the_image_is(tmp_path: Path) -> None:
    """Tesseract's time grows with the pixels: a cover's logo is OCR'd alone (with a margin),
    a page that also draws anything else is rendered whole."""
    cover = ocr.PageRenderer(_cover_pdf(tmp_path / "cover.pdf", with_rule=False))
    ruled = ocr.PageRenderer(_cover_pdf(tmp_path / "ruled.pdf", with_rule=True))
    try:
        cropped, dpi = cover.render(0, dpi=72)
        whole, _ = ruled.render(0, dpi=72)
    finally:
        cover.close()
        ruled.close()
    margin = 2 * ocr.CROP_MARGIN
    assert dpi == 72 and _pnm_size(cropped) == (round(200 + margin), round(100 + margin))
    width, height = _pnm_size(whole)
    assert 595 <= width <= 596 and 841 <= height <= 842  # A4, 595.3 x 841.9 pt


@needs_tesseract
def test_the_word_on_a_cover_logo_is_still_read(tmp_path: Path) -> None:
    doc = parse_document(_cover_pdf(tmp_path / "cover.pdf", with_rule=False), filename="cover.pdf")
    assert doc.metadata["ocr"]["pages"] == [1] and "annotune" in doc.text.lower()
