"""parse_document on real files of every supported format, built here by the tests."""

from __future__ import annotations

import struct
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from service.documents.parsing import (
    ParsedDocument,
    ParseError,
    ParseLimits,
    check_zip_limits,
    decode_text,
    detect_format,
    find_markdown_headings,
    parse_document,
)

# --------------------------------------------------------------------------- factories


def make_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A PDF with a text layer: one list of lines per page."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(path), pagesize=A4)
    pdf.setTitle("Test Manual")
    pdf.setAuthor("QA")
    for lines in pages:
        y = 800
        for line in lines:
            pdf.drawString(72, y, line)
            y -= 18
        pdf.showPage()
    pdf.save()
    return path


PDF_PAGES = [
    ["Chapter One", "The quick brown fox jumps over the lazy dog."],
    ["Chapter Two", "Pack my box with five dozen liquor jugs."],
    ["Chapter Three", "How vexingly quick daft zebras jump."],
]


def rewrite_pdf(
    src: Path, dst: Path, *, password: str | None = None, outline: bool = False
) -> Path:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(str(src)).pages:
        writer.add_page(page)
    if outline:
        first = writer.add_outline_item(title="Part A", page_number=0)
        writer.add_outline_item(title="Chapter Two", page_number=1, parent=first)
        writer.add_outline_item(title="Chapter Three", page_number=2)
    if password is not None:
        writer.encrypt(user_password=password, owner_password="owner", algorithm="AES-256")
    with open(dst, "wb") as fh:
        writer.write(fh)
    return dst


def make_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.core_properties.title = "Quarterly Report"
    document.add_heading("Introduction", level=1)
    document.add_paragraph("This report covers the third quarter.")
    document.add_heading("Revenue 收入", level=2)
    document.add_paragraph("收入同比增长百分之十二。")
    table = document.add_table(rows=3, cols=3)
    for r, row in enumerate(
        [["Region", "Q2", "Q3"], ["North", "10", "12"], ["South|East", "7", "9"]]
    ):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_paragraph("Text after the table.")
    document.add_paragraph("First point", style="List Bullet")
    document.add_heading("Outlook", level=1)
    document.add_paragraph("We expect growth to continue.")
    document.save(str(path))
    return path


EPUB_CHAPTERS = {
    # file name: (title, body html); the spine lists them in a different order than the manifest
    "ch1.xhtml": ("第一章 开端", "<p>故事从一个小镇开始。</p><p>The town was quiet.</p>"),
    "ch2.xhtml": ("Chapter 2: Journey", "<h2>On the road</h2><p>They walked for days.</p>"),
    "ch3.xhtml": ("Chapter 3: Home", "<p>At last they returned home.</p><script>alert(1)</script>"),
}
EPUB_SPINE = ["ch1.xhtml", "ch2.xhtml", "ch3.xhtml"]


def make_epub(path: Path, *, extra_members: int = 0) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")  # stored, first
        zf.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?><container version="1.0" '
            'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>",
        )
        manifest = "".join(
            f'<item id="{name[:-6]}" href="text/{name}" media-type="application/xhtml+xml"/>'
            for name in reversed(EPUB_SPINE)
        )
        spine = "".join(f'<itemref idref="{name[:-6]}"/>' for name in EPUB_SPINE)
        zf.writestr(
            "OEBPS/content.opf",
            '<?xml version="1.0" encoding="utf-8"?>'
            '<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">'
            '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
            "<dc:title>旅程 The Journey</dc:title><dc:creator>Li Lei</dc:creator>"
            "<dc:language>zh</dc:language></metadata>"
            f"<manifest>{manifest}</manifest><spine>{spine}</spine></package>",
        )
        for name, (title, body) in EPUB_CHAPTERS.items():
            zf.writestr(
                f"OEBPS/text/{name}",
                '<?xml version="1.0" encoding="utf-8"?>\n'
                '<html xmlns="http://www.w3.org/1999/xhtml"><head><title/>'
                "<style>p { color: red }</style></head>"
                f"<body><h1>{title}</h1>{body}</body></html>",
            )
        for i in range(extra_members):
            zf.writestr(f"OEBPS/images/{i}.txt", "x")
    return path


def make_zip_bomb(path: Path, *, name: str = "word/document.xml", mib: int = 1024) -> Path:
    """A valid ZIP whose one big member inflates to ``mib`` MiB of zeros (built in ~0.5 s).

    Deflate output for a fully flushed 1 MiB block of zeros is the same every time, so the
    compressed stream is that block repeated; only the CRC has to be computed over the data.
    """
    block = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed_block = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(block, crc)
    size, packed = mib << 20, len(packed_block) * mib + len(tail)
    encoded = name.encode()
    with open(path, "wb") as fh:
        fh.write(
            struct.pack(
                "<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, packed, size, len(encoded), 0
            )
        )
        fh.write(encoded)
        for _ in range(mib):
            fh.write(packed_block)
        fh.write(tail)
        directory_at = fh.tell()
        fh.write(
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                20,
                20,
                0,
                8,
                0,
                0,
                crc,
                packed,
                size,
                len(encoded),
                0,
                0,
                0,
                0,
                0,
                0,
            )
        )
        fh.write(encoded)
        directory_size = fh.tell() - directory_at
        fh.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, directory_size, directory_at, 0))
    return path


# --------------------------------------------------------------------------- PDF


def test_pdf_text_and_pages(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "manual.pdf", PDF_PAGES)
    doc = parse_document(path, filename="manual.pdf")
    assert doc.format == "pdf"
    assert doc.page_count == 3
    assert [p[0] for p in doc.pages] == [1, 2, 3]
    for (page_no, start, end), lines in zip(doc.pages, PDF_PAGES):
        page_text = doc.text[start:end]
        for line in lines:
            assert line in page_text, (page_no, page_text)
    assert doc.text.index("Pack my box") > doc.text.index("lazy dog")
    assert doc.metadata["title"] == "Test Manual"
    assert doc.metadata["page_count"] == 3
    assert doc.metadata["pdf_engine"] == "pdfium"


def test_pdf_outline_becomes_headings(tmp_path: Path) -> None:
    plain = make_pdf(tmp_path / "plain.pdf", PDF_PAGES)
    path = rewrite_pdf(plain, tmp_path / "outlined.pdf", outline=True)
    doc = parse_document(path, filename="outlined.pdf")
    assert [(level, title) for level, title, _ in doc.headings] == [
        (1, "Part A"),
        (2, "Chapter Two"),
        (1, "Chapter Three"),
    ]
    offsets = [offset for _, _, offset in doc.headings]
    assert offsets == [doc.pages[0][1], doc.pages[1][1], doc.pages[2][1]]


def test_encrypted_pdf_fails_with_clear_reason(tmp_path: Path) -> None:
    plain = make_pdf(tmp_path / "plain.pdf", PDF_PAGES)
    path = rewrite_pdf(plain, tmp_path / "secret.pdf", password="s3cret")
    with pytest.raises(ParseError) as info:
        parse_document(path, filename="secret.pdf")
    assert info.value.reason == "encrypted PDF: a password is required to open it"


def test_pdf_with_empty_user_password_opens(tmp_path: Path) -> None:
    plain = make_pdf(tmp_path / "plain.pdf", PDF_PAGES)
    path = rewrite_pdf(plain, tmp_path / "restricted.pdf", password="")
    doc = parse_document(path, filename="restricted.pdf")
    assert "lazy dog" in doc.text


def test_pdf_page_limit(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "manual.pdf", PDF_PAGES)
    with pytest.raises(ParseError, match="3 pages, over the limit of 2"):
        parse_document(path, filename="manual.pdf", limits=ParseLimits(max_pages=2))


def test_pdf_time_budget_checked_between_pages(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "manual.pdf", PDF_PAGES)
    with pytest.raises(ParseError, match=r"time budget .*PDF page 1 of 3"):
        parse_document(path, filename="manual.pdf", limits=ParseLimits(max_seconds=1e-9))


def test_pdf_time_budget_checked_after_a_pdfium_page(tmp_path: Path) -> None:
    # one page of 12,000 lines: ~0.5 s in PDFium, which reads a page in one call
    lines = [f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(12_000)]
    path = make_pdf(tmp_path / "dense.pdf", [lines])
    with pytest.raises(ParseError, match=r"time budget of 0.1 s \(PDF page 1 of 1\)"):
        parse_document(path, filename="dense.pdf", limits=ParseLimits(max_seconds=0.1))


def test_pdf_time_budget_checked_inside_a_pypdf_page(tmp_path: Path, monkeypatch) -> None:
    # where PDFium cannot open the file, pypdf reads it (~1.4 s for this page, most of it
    # interpreting operators) and the budget is checked between operators
    from service.documents import pdf

    def refuse(path: Path) -> None:
        raise RuntimeError("PDFium cannot open this file")

    monkeypatch.setattr(pdf, "PdfiumDocument", refuse)
    lines = [f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(12_000)]
    path = make_pdf(tmp_path / "dense.pdf", [lines])
    started = time.monotonic()
    with pytest.raises(ParseError, match=r"time budget of 0.5 s \(inside PDF page 1 of 1\)"):
        parse_document(path, filename="dense.pdf", limits=ParseLimits(max_seconds=0.5))
    assert time.monotonic() - started < 5


def test_pypdf_fallback_reads_text_pages_and_outline(tmp_path: Path, monkeypatch) -> None:
    from service.documents import pdf

    def refuse(path: Path) -> None:
        raise RuntimeError("PDFium cannot open this file")

    monkeypatch.setattr(pdf, "PdfiumDocument", refuse)
    plain = make_pdf(tmp_path / "plain.pdf", PDF_PAGES)
    doc = parse_document(rewrite_pdf(plain, tmp_path / "o.pdf", outline=True), filename="o.pdf")
    assert doc.metadata["pdf_engine"] == "pypdf"
    assert [p[0] for p in doc.pages] == [1, 2, 3]
    assert "Pack my box" in doc.text[doc.pages[1][1] : doc.pages[1][2]]
    assert [title for _, title, _ in doc.headings] == ["Part A", "Chapter Two", "Chapter Three"]


def test_pdf_without_text_layer_is_refused(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "scan.pdf", [[], []])
    with pytest.raises(ParseError, match="no text layer"):
        parse_document(path, filename="scan.pdf")


def test_truncated_pdf_is_corrupt(tmp_path: Path) -> None:
    data = make_pdf(tmp_path / "ok.pdf", PDF_PAGES).read_bytes()
    path = tmp_path / "broken.pdf"
    path.write_bytes(data[:200])
    with pytest.raises(ParseError, match="PDF"):
        parse_document(path, filename="broken.pdf")


# --------------------------------------------------------------------------- DOCX


def test_docx_headings_tables_in_order(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "report.docx")
    doc = parse_document(path, filename="report.docx")
    assert doc.format == "docx"
    assert doc.metadata["title"] == "Quarterly Report"
    text = doc.text
    expected_order = [
        "# Introduction",
        "This report covers the third quarter.",
        "## Revenue 收入",
        "收入同比增长百分之十二。",
        "| Region | Q2 | Q3 |\n| --- | --- | --- |\n| North | 10 | 12 |\n| South\\|East | 7 | 9 |",
        "Text after the table.",
        "- First point",
        "# Outlook",
        "We expect growth to continue.",
    ]
    positions = [text.index(part) for part in expected_order]
    assert positions == sorted(positions)
    assert [(level, title) for level, title, _ in doc.headings] == [
        (1, "Introduction"),
        (2, "Revenue 收入"),
        (1, "Outlook"),
    ]
    for level, title, offset in doc.headings:
        assert text[offset:].startswith("#" * level + " " + title)
    assert doc.pages == []


def test_corrupt_docx_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "report.docx"
    path.write_bytes(b"this is not really a word document\n" * 20)
    with pytest.raises(ParseError) as info:
        parse_document(path, filename="report.docx")
    assert "not a valid DOCX" in info.value.reason


def test_corrupt_docx_truncated(tmp_path: Path) -> None:
    data = make_docx(tmp_path / "ok.docx").read_bytes()
    path = tmp_path / "truncated.docx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParseError, match="corrupt DOCX"):
        parse_document(path, filename="truncated.docx")


def test_docx_zip_without_document_part(tmp_path: Path) -> None:
    path = tmp_path / "empty.docx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
    with pytest.raises(ParseError, match="word/document.xml is missing"):
        parse_document(path, filename="empty.docx")


def test_zip_bomb_disguised_as_docx_is_refused_quickly(tmp_path: Path) -> None:
    path = make_zip_bomb(tmp_path / "bomb.docx", mib=1024)
    with zipfile.ZipFile(path) as zf:  # a genuine archive: the member really inflates
        assert zf.getinfo("word/document.xml").file_size == 1 << 30
        with zf.open("word/document.xml") as member:
            assert member.read(1 << 20) == bytes(1 << 20)
    started = time.monotonic()
    with pytest.raises(ParseError) as info:
        parse_document(path, filename="bomb.docx")
    assert time.monotonic() - started < 1.0
    assert "possible zip bomb" in info.value.reason
    assert "512.0 MB" in info.value.reason


def test_zip_bomb_caught_by_compression_ratio(tmp_path: Path) -> None:
    path = make_zip_bomb(tmp_path / "small-bomb.docx", mib=64)  # under 512 MB, ratio ~1000:1
    with pytest.raises(ParseError, match=r"compression ratio \d+:1 \(limit 200:1\)"):
        parse_document(path, filename="small-bomb.docx")


def test_zip_member_count_limit(tmp_path: Path) -> None:
    path = make_epub(tmp_path / "many.epub", extra_members=50)
    with pytest.raises(ParseError, match="entries, over the limit of 20"):
        parse_document(path, filename="many.epub", limits=ParseLimits(max_members=20))
    with zipfile.ZipFile(path) as zf:
        check_zip_limits(zf, ParseLimits())  # fine with the defaults


# --------------------------------------------------------------------------- EPUB


def test_epub_chapters_in_spine_order(tmp_path: Path) -> None:
    path = make_epub(tmp_path / "book.epub")
    doc = parse_document(path, filename="book.epub")
    assert doc.format == "epub"
    assert doc.metadata["title"] == "旅程 The Journey"
    assert doc.metadata["author"] == "Li Lei"
    titles = [title for _, title, _ in doc.headings]
    assert titles == ["第一章 开端", "Chapter 2: Journey", "On the road", "Chapter 3: Home"]
    assert [level for level, _, _ in doc.headings] == [1, 1, 2, 1]
    for level, title, offset in doc.headings:
        assert doc.text[offset:].startswith("#" * level + " " + title)
    assert "故事从一个小镇开始。" in doc.text
    assert "alert" not in doc.text and "color: red" not in doc.text
    chapters = doc.metadata["chapters"]
    assert [c["href"] for c in chapters] == [f"OEBPS/text/{n}" for n in EPUB_SPINE]
    assert doc.text[chapters[1]["char_start"] :].startswith("# Chapter 2: Journey")


def test_epub_missing_container(tmp_path: Path) -> None:
    path = tmp_path / "broken.epub"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip")
    with pytest.raises(ParseError, match="container.xml is missing"):
        parse_document(path, filename="broken.epub")


# --------------------------------------------------------------------------- text, Markdown, HTML

CHINESE = "第一章 总则\n\n为了规范数据处理活动，保障数据安全，促进数据开发利用，制定本办法。\n"


def test_gbk_text_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.txt"
    path.write_bytes(CHINESE.encode("gbk"))
    doc = parse_document(path, filename="rules.txt")
    assert doc.format == "text"
    assert doc.text == CHINESE
    assert doc.metadata["encoding"] == "gb18030"


def test_utf8_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "line one\r\nline two 二\r\n".encode())
    doc = parse_document(path, filename="notes.txt")
    assert doc.text == "line one\nline two 二\n"
    assert doc.metadata["encoding"] == "utf-8-sig"


def test_legacy_single_byte_text_uses_fallback(tmp_path: Path) -> None:
    text = "Le café était très animé. Déjà vu, naïve façade, crème brûlée.\n" * 5
    path = tmp_path / "french.txt"
    path.write_bytes(text.encode("cp1252"))
    doc = parse_document(path, filename="french.txt")
    assert "café était très animé" in doc.text
    assert doc.metadata["encoding"] != "gb18030"


def test_decode_text_variants() -> None:
    assert decode_text("中文".encode("gb18030")) == ("中文", "gb18030")
    assert decode_text("中文".encode("utf-16")) == ("中文", "utf-16")
    assert decode_text(b"plain") == ("plain", "utf-8")
    assert decode_text("截断的文本".encode()[:-1]) == ("截断的文\ufffd", "utf-8")


@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("gbk", "这是一个简体中文的测试文件，内容包含许多常用字。" * 3),
        ("big5", "這是一個繁體中文的測試文件，內容包含許多常用字。" * 3),
        ("shift_jis", "日本語のテキストです。これはテストです。" * 5),
        ("cp1252", "Grüße aus München, schöne Straße – für alle. " * 5),
    ],
)
def test_decode_text_does_not_force_gb18030(encoding: str, text: str) -> None:
    # GB18030 decodes Big5 and Shift-JIS bytes without error, into the wrong characters
    assert decode_text(text.encode(encoding))[0] == text


MARKDOWN = """# Guide

Intro text.

## Install

```bash
# this is a comment, not a heading
pip install annotune
```

### Linux ###

Use the package manager.

#notaheading

## 使用说明
内容。
"""


def test_markdown_headings(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_text(MARKDOWN, encoding="utf-8")
    doc = parse_document(path, filename="guide.md")
    assert doc.format == "markdown"
    assert doc.text == MARKDOWN
    assert [(level, title) for level, title, _ in doc.headings] == [
        (1, "Guide"),
        (2, "Install"),
        (3, "Linux"),
        (2, "使用说明"),
    ]
    for _, title, offset in doc.headings:
        assert doc.text[offset:].lstrip("# ").startswith(title)
    assert doc.metadata["title"] == "Guide"
    assert find_markdown_headings("no headings here") == []


HTML = """<!DOCTYPE html>
<html><head><meta charset="gbk"><title>产品 Manual</title>
<style>body { font-family: sans-serif; }</style>
<script>var tracking = "SECRET-TRACKER";</script></head>
<body>
<header><a href="/">Site logo</a></header>
<nav><ul><li>Home</li><li>Pricing</li></ul></nav>
<h1>User   Manual</h1>
<noscript>Please enable JavaScript</noscript>
<p>Welcome to <b>annotune</b>.<br>Second line.</p>
<h2>安装步骤</h2>
<ol><li>下载安装包</li><li>运行安装程序</li></ol>
<table><tr><th>Key</th><th>Value</th></tr><tr><td>port</td><td>8000</td></tr></table>
<div hidden>hidden text</div>
<footer>Copyright footer</footer>
<script>console.log("late script")</script>
</body></html>
"""


def test_html_main_text(tmp_path: Path) -> None:
    path = tmp_path / "manual.html"
    path.write_bytes(HTML.encode("gbk"))
    doc = parse_document(path, filename="manual.html")
    assert doc.format == "html"
    assert doc.metadata["title"] == "产品 Manual"
    assert doc.text == (
        "# User Manual\n\n"
        "Welcome to annotune.\nSecond line.\n\n"
        "## 安装步骤\n\n"
        "1. 下载安装包\n\n2. 运行安装程序\n\n"
        "| Key | Value |\n| --- | --- |\n| port | 8000 |"
    )
    assert [(level, title) for level, title, _ in doc.headings] == [
        (1, "User Manual"),
        (2, "安装步骤"),
    ]
    for level, title, offset in doc.headings:
        assert doc.text[offset:].startswith("#" * level + " " + title)


def test_html_prefers_main_element(tmp_path: Path) -> None:
    path = tmp_path / "page.htm"
    path.write_text(
        "<html><body><div>Sidebar junk</div><main><h1>Title</h1><p>Body.</p></main></body></html>",
        encoding="utf-8",
    )
    doc = parse_document(path, filename="page.htm")
    assert doc.text == "# Title\n\nBody."


# --------------------------------------------------------------------------- detection and limits


def test_detection_by_magic_beats_extension(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "real.pdf", PDF_PAGES)
    renamed = tmp_path / "upload.bin"
    renamed.write_bytes(pdf.read_bytes())
    assert detect_format(renamed, filename="upload.bin") == "pdf"
    html = tmp_path / "page"
    html.write_text("<!doctype html><html><body><p>x</p></body></html>")
    assert detect_format(html, filename="page") == "html"
    md = tmp_path / "readme"
    md.write_text("# Title\n")
    assert detect_format(md, filename="readme", content_type="text/markdown") == "markdown"
    assert detect_format(md, filename="readme") == "text"
    about_pdf = tmp_path / "notes.md"
    about_pdf.write_text("# Notes\n\nA PDF file starts with %PDF-1.7 and ends with %%EOF.\n")
    assert detect_format(about_pdf, filename="notes.md") == "markdown"
    assert detect_format(about_pdf, filename="notes") == "text"


@pytest.mark.parametrize(
    ("data", "filename", "reason"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "photo.png", "PNG image"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), "old.doc", "legacy Office file"),
        (b"\x00\x01\x02binary\x00" * 10, "data.bin", "binary data"),
        (b"hello", "fake.pdf", "not a valid PDF file"),
    ],
)
def test_unsupported_types(tmp_path: Path, data: bytes, filename: str, reason: str) -> None:
    path = tmp_path / filename
    path.write_bytes(data)
    with pytest.raises(ParseError, match=reason):
        parse_document(path, filename=filename)


def test_unsupported_zip(tmp_path: Path) -> None:
    path = tmp_path / "archive.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.txt", "hello")
    with pytest.raises(ParseError, match="neither DOCX nor EPUB"):
        parse_document(path, filename="archive.zip")


def test_file_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("x" * 2000)
    with pytest.raises(ParseError, match="over the limit"):
        parse_document(path, filename="big.txt", limits=ParseLimits(max_file_bytes=1000))


def test_empty_text_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("  \n\n ")
    with pytest.raises(ParseError, match="no text"):
        parse_document(path, filename="empty.txt")


def test_nul_bytes_removed(tmp_path: Path) -> None:
    path = tmp_path / "nul.md"
    path.write_bytes(b"\xef\xbb\xbf# T\n\nA\x00B\n")
    doc = parse_document(path, filename="nul.md")
    assert "\x00" not in doc.text and "AB" in doc.text


def test_parsed_document_page_count() -> None:
    assert ParsedDocument(text="x", format="text").page_count is None


def test_epub_html_entities_and_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "entities.epub"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip")
        zf.writestr(
            "META-INF/container.xml",
            '<container><rootfiles><rootfile full-path="book/package.opf"/></rootfiles></container>',
        )
        zf.writestr(
            "book/package.opf",
            '<package><manifest><item id="x" href="../text/chapter%20one.html" '
            'media-type="application/xhtml+xml"/></manifest><spine><itemref idref="x"/></spine></package>',
        )
        zf.writestr(
            "text/chapter one.html",
            "<html><body><p>Caf&eacute;&nbsp;menu &amp; more &lt;b&gt;<br>next</p></body></html>",
        )
    doc = parse_document(path, filename="entities.epub")
    assert doc.text == "Café menu & more <b>\nnext"


def test_deeply_nested_html_keeps_text(tmp_path: Path) -> None:
    path = tmp_path / "deep.html"
    depth = 1000
    path.write_text(
        "<html><body><h1>Top</h1>"
        + "<div>" * depth
        + "deep text"
        + "</div>" * depth
        + "<p>after</p></body></html>"
    )
    doc = parse_document(path, filename="deep.html")
    assert doc.text.startswith("# Top\n\n")
    assert "deep text" in doc.text and doc.text.endswith("after")


def test_drm_epub_is_refused(tmp_path: Path) -> None:
    path = make_epub(tmp_path / "drm.epub")
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(
            "META-INF/encryption.xml",
            '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
            'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData><enc:CipherData>'
            '<enc:CipherReference URI="OEBPS/text/ch2.xhtml"/></enc:CipherData></enc:EncryptedData>'
            "</encryption>",
        )
    with pytest.raises(ParseError, match="DRM-protected"):
        parse_document(path, filename="drm.epub")


def test_html_layout_table_is_walked_not_flattened(tmp_path: Path) -> None:
    path = tmp_path / "old.html"
    path.write_text(
        "<html><body><table><tr><td>Menu</td><td><h1>Old Page</h1><p>First.</p>"
        "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>"
        "</td></tr></table></body></html>"
    )
    doc = parse_document(path, filename="old.html")
    assert doc.text == "Menu\n\n# Old Page\n\nFirst.\n\n| a | b |\n| --- | --- |\n| 1 | 2 |"
    assert doc.headings == [(1, "Old Page", 6)]


def test_zip_member_lying_about_its_size_is_not_inflated(tmp_path: Path) -> None:
    """The declared-size checks are enough only because zipfile stops at the declared size."""
    path = make_epub(tmp_path / "liar.epub")
    data = bytearray(path.read_bytes())
    name = b"OEBPS/text/ch2.xhtml"
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name.decode())
    struct.pack_into("<I", data, info.header_offset + 22, 10)  # local header: uncompressed size
    central = data.find(b"PK\x01\x02" + data[info.header_offset + 4 : info.header_offset + 6])
    while data[central + 46 : central + 46 + len(name)] != name:
        central = data.find(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", data, central + 24, 10)  # central directory: uncompressed size
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as zf, pytest.raises(zipfile.BadZipFile, match="CRC"):
        zf.read(name.decode())
    with pytest.raises(ParseError, match="corrupt or unreadable EPUB: BadZipFile"):
        parse_document(path, filename="liar.epub")


def test_parsed_pdf_chunks_carry_pages_and_outline(tmp_path: Path) -> None:
    from service.documents.chunking import ChunkSettings, chunk_text

    plain = make_pdf(tmp_path / "plain.pdf", PDF_PAGES)
    doc = parse_document(
        rewrite_pdf(plain, tmp_path / "outlined.pdf", outline=True), filename="x.pdf"
    )
    chunks = chunk_text(doc, ChunkSettings(strategy="markdown", max_chars=60))
    by_page = {c.page_start: c for c in chunks}
    assert set(by_page) == {1, 2, 3}
    assert "Pack my box" in " ".join(c.text for c in chunks if c.page_start == 2)
    assert all(c.page_end == c.page_start for c in chunks)
    assert by_page[2].heading_path == ["Part A", "Chapter Two"]
    assert by_page[3].heading_path == ["Chapter Three"]
