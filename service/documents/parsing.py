"""Turn an uploaded file into plain text with provenance (pages, headings).

Pure Python: no database, no HTTP. ``parse_document`` is the one entry point; it detects the
format from magic bytes first and the file name / content type second, applies the limits in
``ParseLimits`` *before* doing expensive work, and raises ``ParseError`` with a reason a data
lead can read ("encrypted PDF: ...", "possible zip bomb: ...").

Output text is Markdown-flavoured: headings become ``#`` lines and tables become Markdown
tables, so the heading-aware chunker sees the same structure whatever the source format was.

Parser choices (one core, CPU time, ``bench/ingest.py --formats``; see docs/benchmarks.md):

- PDF: ``pypdfium2`` (PDFium; Apache-2.0/BSD, wheels bundle it) reads the text layer page by
  page, placing word spaces from glyph positions as a viewer does; see ``pdf.py`` for why and
  for the clean-up (ligatures, line-end hyphens, running headers/footers, TOC pages, Chinese
  line wraps), all done per page so page numbers stay exact. ~350 pages/s on a real
  261-page manual (English; ~265 pages/s for its Chinese edition), against 31-38 with pypdf.
  ``pypdf`` (BSD) is the fallback where PDFium cannot open a file, and for a single page
  PDFium fails on; it opens AES/RC4-encrypted files (via ``cryptography``) and its time
  budget is checked every 1,024 operators inside a page. PDFium reads a page in one call, so
  with it the budget is checked between pages (a 12,000-line page takes ~0.5 s); keep a
  Celery soft time limit on the task. A password-protected PDF is refused ("encrypted PDF:
  a password is required"); an empty user password opens. PyMuPDF is AGPL, so it was ruled
  out. A page with (almost) no text layer that draws an image, or whose text layer is
  garbled (mostly unmapped glyphs: U+FFFD, private-use or control characters), is read with
  OCR (Tesseract, see ``ocr.py``, section OCR); without Tesseract it keeps its layer with a
  warning in ``metadata["warnings"]``, and a PDF with no text at all is refused. Headings
  come from the PDF outline (bookmarks), if any. ``metadata`` records ``pdf_engine``,
  ``pdf_cleanup`` (see ``pdf.py``), ``garbled_pages`` and ``failed_pages``.
- DOCX: ``python-docx`` (MIT) opens the package and reads styles, sections and settings; the
  WordprocessingML elements are walked directly (2.4x faster than through python-docx's
  proxy objects, same text). Style "Heading N" / "Title" become Markdown headings,
  "List Bullet"/"List Number" become list items, tables become Markdown tables; block-level
  content controls are read, inline ones are not. Order of the text:

  1. page headers, then page footers, each distinct part once (sections that reuse or link
     to a part do not repeat it; a first-page or even-page part only if the document shows
     it). They repeat on every page, so no one place in the running text is theirs: first,
     before any heading, their chunks carry an empty heading path and never join a body
     section. They are part of ``text`` (not metadata) so that redaction covers them;
  2. the body; a text box (``w:txbxContent``) follows the paragraph or table it is anchored
     in, read once although Word stores it twice (DrawingML in ``mc:Choice``, VML in
     ``mc:Fallback``; the fallback is read only when no choice holds the box);
  3. ``# Footnotes`` and ``# Endnotes`` sections with ``[^1]: ...`` / ``[^i]: ...`` blocks;
     the body carries ``[^1]`` where a note is referenced. Notes are numbered in order of
     first reference (Word's default formats: 1, 2, 3 and i, ii, iii); unreferenced notes
     follow. The heading keeps notes out of the body's last section in chunk metadata.

  ``metadata["docx_parts"]`` counts what was read besides the body (``header_parts``,
  ``footer_parts``, ``footnotes``, ``endnotes``, ``text_boxes``). DOCX has no pages, so
  chunks have no page numbers.
- EPUB: ``zipfile`` + ``lxml`` directly (container.xml -> OPF -> spine order; ~23 MB/s).
  ebooklib would load every item of the book into memory and adds nothing we need. Chapters
  whose files ``META-INF/encryption.xml`` lists are refused as DRM-protected.
- HTML / XHTML: ``lxml`` (BSD) with a small tree walker (5-8 MB/s on real DocBook chapters,
  ~11 MB/s on generated pages): drops script, style, noscript, nav, forms, hidden elements,
  ``role=navigation/banner/contentinfo/search`` and the page's top-level header/footer;
  prefers ``<main>`` or a lone ``<article>``, else the element that holds most of the
  page's non-link text, and drops link-dense navigation blocks inside it (tables of
  contents, breadcrumbs, prev/next bars; see ``html.py``, counted in
  ``metadata["navigation_blocks_dropped"]``). Headings become ``#`` lines, list items
  ``- item`` or ``3. item`` lines (the number of an ``<ol>`` item, ``start``/``value``
  honoured, marker and text on one line even when the item holds paragraphs; nested lists
  indented), ``pre`` a fenced code block (so ``# apt-get update`` is never a heading) and
  data tables Markdown (layout tables are walked as blocks). EPUB chapters go through the
  same walker. BeautifulSoup is not needed on top of lxml for this.
- Plain text and Markdown (60-75 MB/s, decoding included): UTF-8 (BOM honoured), then GB18030
  (a superset of GBK/GB2312) if the result is plausible Chinese, then cp1252 if it looks like
  Western European text, then ``charset-normalizer``. Markdown headings are ATX ``#`` lines
  outside fenced code blocks (setext underlines are not treated as headings).

ZIP-based formats (DOCX, EPUB) are checked from the central directory before any member is
inflated: member count, total declared size and compression ratio. CPython's ``zipfile`` never
inflates a member past its declared size (it stops there and fails the CRC check; a test pins
this), so checking the declared sizes bounds the memory actually used.
"""

from __future__ import annotations

import os
import re
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lxml import etree
from lxml import html as lxml_html

from service.documents import html, ocr, pdf

__all__ = [
    "FORMATS",
    "ParseError",
    "ParseLimits",
    "ParsedDocument",
    "check_zip_limits",
    "decode_text",
    "detect_format",
    "find_markdown_headings",
    "parse_document",
]

MB = 1024 * 1024

#: Values of ``ParsedDocument.format`` (and of ``Document.format`` in the database).
FORMATS = ("pdf", "docx", "epub", "html", "markdown", "text")


class ParseError(Exception):
    """The file cannot be turned into text; ``reason`` is safe to show to the uploader."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ParseLimits:
    """Resource limits applied while parsing one file."""

    max_file_bytes: int = field(default=256 * MB, metadata={"help": "Largest file accepted."})
    max_expanded_bytes: int = field(
        default=512 * MB,
        metadata={"help": "Largest total uncompressed size of a ZIP-based file (DOCX, EPUB)."},
    )
    max_ratio: float = field(
        default=200.0,
        metadata={"help": "Largest uncompressed/compressed ratio of a ZIP member or archive."},
    )
    ratio_min_bytes: int = field(
        default=1 * MB,
        metadata={"help": "Members (and archives) smaller than this skip the ratio check."},
    )
    max_members: int = field(default=10_000, metadata={"help": "Most entries in a ZIP file."})
    max_pages: int = field(default=5_000, metadata={"help": "Most pages in a PDF."})
    max_seconds: float = field(
        default=300.0,
        metadata={"help": "Time budget for one file; checked between pages/chapters/blocks."},
    )
    ocr_page_seconds: float = field(
        default=120.0,
        metadata={"help": "Longest OCR of one scanned PDF page (also bounded by max_seconds)."},
    )

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_expanded_bytes", "max_members", "max_pages"):
            if getattr(self, name) < 1:
                raise ValueError(f"ParseLimits.{name} must be positive")
        if self.max_ratio <= 1:
            raise ValueError("ParseLimits.max_ratio must be greater than 1")
        if self.max_seconds <= 0:
            raise ValueError("ParseLimits.max_seconds must be positive")
        if self.ocr_page_seconds <= 0:
            raise ValueError("ParseLimits.ocr_page_seconds must be positive")


@dataclass
class ParsedDocument:
    """Text of one document and where its parts came from.

    ``pages``: ``(page_no, start_char, end_char)`` with 1-based page numbers, PDF only.
    ``headings``: ``(level, title, char_offset)``; the offset is where the heading line starts
    in ``text``.
    """

    text: str
    format: str
    pages: list[tuple[int, int, int]] = field(default_factory=list)
    headings: list[tuple[int, str, int]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def page_count(self) -> int | None:
        return len(self.pages) if self.pages else None


# --------------------------------------------------------------------------- entry point


def parse_document(
    path: str | os.PathLike[str],
    *,
    filename: str,
    content_type: str | None = None,
    limits: ParseLimits = ParseLimits(),
) -> ParsedDocument:
    """Parse the file at ``path`` (uploaded as ``filename``) into a ``ParsedDocument``.

    Raises ``ParseError`` for unsupported, encrypted, corrupt or over-limit files and for files
    with no extractable text.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise ParseError(f"file is {_mb(size)}, over the limit of {_mb(limits.max_file_bytes)}")
    fmt = detect_format(path, filename=filename, content_type=content_type)
    deadline = _Deadline(limits.max_seconds)
    parser = _PARSERS[fmt]
    try:
        doc = parser(path, limits, deadline)
    except ParseError:
        raise
    except (MemoryError, RecursionError) as exc:
        raise ParseError(f"{fmt.upper()} is too large or too deeply nested to parse") from exc
    except Exception as exc:  # third-party parsers raise many types for damaged files
        raise ParseError(
            f"corrupt or unreadable {fmt.upper()}: {type(exc).__name__}: {exc}"
        ) from exc
    if not doc.text.strip():
        raise ParseError(_EMPTY_REASONS.get(fmt, "no text could be extracted"))
    doc.metadata.setdefault("chars", len(doc.text))
    return doc


_EMPTY_REASONS = {
    "pdf": "PDF has no text layer and no page images to OCR (blank pages?)",
}


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()

    def check(self, where: str) -> None:
        if self.remaining() < 0:
            raise ParseError(f"parsing exceeded the time budget of {self.seconds:g} s ({where})")

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self.started)


def _mb(n: int) -> str:
    return f"{n / MB:.1f} MB"


# --------------------------------------------------------------------------- format detection

_EXTENSIONS = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".epub": "epub",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".mdown": "markdown",
    ".mkd": "markdown",
    ".txt": "text",
    ".text": "text",
}
_CONTENT_TYPES = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/epub+zip": "epub",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
}
# Binary formats we recognise only to name them in the refusal.
_UNSUPPORTED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "legacy Office file (.doc/.xls/.ppt); save it as DOCX or PDF",
    ),
    (b"{\\rtf", "RTF; save it as DOCX or PDF"),
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"II*\x00", "TIFF image"),
    (b"MM\x00*", "TIFF image"),
    (b"Rar!", "RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"\x1f\x8b", "gzip archive"),
    (b"\x7fELF", "executable"),
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
_HTML_SNIFF = re.compile(
    rb"^(?:\s|<!--.*?-->|<\?xml[^>]*>)*<(?:!doctype\s+html|html[\s>])", re.IGNORECASE | re.DOTALL
)


def detect_format(
    path: str | os.PathLike[str], *, filename: str, content_type: str | None = None
) -> str:
    """Return one of ``FORMATS`` for the file, or raise ``ParseError`` if unsupported.

    Magic bytes win over the name; a name that promises a binary format the bytes do not
    have is reported as corrupt or mislabeled rather than parsed as something else.
    """
    with open(path, "rb") as fh:
        head = fh.read(8192)
    claimed = _claimed_format(filename, content_type)
    if head.lstrip().startswith(b"%PDF-") or (claimed == "pdf" and b"%PDF-" in head[:1024]):
        return "pdf"  # readers accept junk before the header; we only when the name says PDF
    if head.startswith(_ZIP_MAGIC):
        return _zip_format(path, claimed)
    for magic, name in _UNSUPPORTED_MAGIC:
        if head.startswith(magic):
            raise ParseError(f"unsupported file type: {name}")
    if claimed in ("pdf", "docx", "epub"):
        what = "no %PDF header" if claimed == "pdf" else "not a ZIP archive"
        raise ParseError(f"not a valid {claimed.upper()} file ({what}); corrupt or mislabeled")
    if b"\x00" in head and not head.startswith(_BOMS):
        raise ParseError("unsupported file type: binary data")
    if claimed in ("html", "markdown"):
        return claimed
    if _HTML_SNIFF.match(head.lstrip(b"\xef\xbb\xbf")):
        return "html"
    return "text"


def _claimed_format(filename: str, content_type: str | None) -> str | None:
    ext = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    mime = (content_type or "").split(";")[0].strip().lower()
    return _CONTENT_TYPES.get(mime)


def _zip_format(path: Path, claimed: str | None) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        label = claimed.upper() if claimed in ("docx", "epub") else "ZIP"
        raise ParseError(f"corrupt {label} file: damaged ZIP archive ({exc})") from exc
    if "META-INF/container.xml" in names:
        return "epub"
    if "word/document.xml" in names:
        return "docx"
    if "xl/workbook.xml" in names or "ppt/presentation.xml" in names:
        raise ParseError("unsupported file type: Excel/PowerPoint; export it as PDF or DOCX")
    if claimed == "docx":
        raise ParseError("corrupt DOCX file: word/document.xml is missing")
    if claimed == "epub":
        raise ParseError("corrupt EPUB file: META-INF/container.xml is missing")
    raise ParseError("unsupported file type: ZIP archive that is neither DOCX nor EPUB")


# --------------------------------------------------------------------------- ZIP guard


def check_zip_limits(zf: zipfile.ZipFile, limits: ParseLimits) -> None:
    """Refuse archives that would inflate beyond ``limits``, reading only the directory."""
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise ParseError(
            f"archive has {len(infos)} entries, over the limit of {limits.max_members}"
        )
    total = packed = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise ParseError(f"archive member {info.filename!r} is encrypted")
        total += info.file_size
        packed += info.compress_size
        if total > limits.max_expanded_bytes:
            raise ParseError(
                f"possible zip bomb: archive expands to more than the "
                f"{_mb(limits.max_expanded_bytes)} limit"
            )
        _check_ratio(info.file_size, info.compress_size, limits, f"member {info.filename!r}")
    _check_ratio(total, packed, limits, "archive")


def _check_ratio(size: int, packed: int, limits: ParseLimits, what: str) -> None:
    if size < limits.ratio_min_bytes:
        return
    ratio = size / max(packed, 1)
    if ratio > limits.max_ratio:
        raise ParseError(
            f"possible zip bomb: {what} has compression ratio {ratio:.0f}:1 "
            f"(limit {limits.max_ratio:g}:1)"
        )


def _open_checked_zip(path: Path, limits: ParseLimits, label: str) -> zipfile.ZipFile:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ParseError(f"corrupt {label} file: damaged ZIP archive ({exc})") from exc
    try:
        check_zip_limits(zf, limits)
    except BaseException:
        zf.close()
        raise
    return zf


# --------------------------------------------------------------------------- text assembly


class _TextBuilder:
    """Joins blocks with blank lines and records heading offsets as it goes."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self.headings: list[tuple[int, str, int]] = []

    @property
    def length(self) -> int:
        return self._length

    def block(self, text: str) -> int | None:
        text = text.strip("\n")
        if not text.strip():
            return None
        if self._parts:
            self._parts.append("\n\n")
            self._length += 2
        start = self._length
        self._parts.append(text)
        self._length += len(text)
        return start

    def heading(self, level: int, title: str) -> None:
        title = " ".join(title.split())
        if not title:
            return
        level = min(max(level, 1), 6)
        start = self.block("#" * level + " " + title)
        if start is not None:
            self.headings.append((level, title, start))

    def text(self) -> str:
        return "".join(self._parts)


def _clean(text: str) -> str:
    """Normalise newlines and drop NULs (PostgreSQL text cannot hold them)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text


def _markdown_table(rows: list[list[str]]) -> str:
    rows = [[_table_cell(c) for c in row] for row in rows if any(c.strip() for c in row)]
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * width]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def _table_cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# --------------------------------------------------------------------------- text decoding

_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode bytes of a text file; return ``(text, encoding_name)``.

    Order: BOMs, strict UTF-8, strict GB18030 when the result looks Chinese, cp1252 when the
    result looks like Western European text, then charset-normalizer, then UTF-8 with
    replacement characters.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace"), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace"), "utf-16"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3:  # UTF-8 cut off inside the last character
            return data.decode("utf-8", errors="replace"), "utf-8"
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        pass
    else:
        if _looks_chinese(text):
            return text, "gb18030"
    text = data.decode("cp1252", errors="replace")
    if _looks_western(text):
        return text, "cp1252"
    return _decode_fallback(data)


def _looks_chinese(text: str) -> bool:
    """GB18030 also decodes Shift-JIS, Big5 and some Latin-1 bytes (into rare characters).

    Accept it only if nearly all non-ASCII characters are in GB2312, the common set that
    real Chinese text almost never leaves.
    """
    non_ascii = "".join(_NON_ASCII.findall(text))
    in_gb2312 = len(non_ascii.encode("gb2312", errors="ignore")) // 2
    return in_gb2312 >= 0.95 * len(non_ascii)


_WESTERN = re.compile(
    r"[\u00a0-\u00ff\u0152\u0153\u0160\u0161\u0178\u017d\u017e"  # Latin-1 letters, Œ Š Ÿ Ž
    r"\u2013\u2014\u2018-\u201e\u2022\u2026\u20ac]"  # dashes, curly quotes, bullet, …, €
)
_LETTER = re.compile(r"[^\W\d_]")


def _looks_western(text: str) -> bool:
    """cp1252 text: a few accented letters among mostly ASCII ones (charset-normalizer often
    mistakes short French or German text for Baltic or Central European code pages)."""
    if "\ufffd" in text:
        return False
    non_ascii = _NON_ASCII.findall(text)
    letters = len(_LETTER.findall(text))
    return (
        bool(non_ascii)
        and len(non_ascii) <= 0.25 * max(letters, 1)
        and len(_WESTERN.findall(text)) >= 0.95 * len(non_ascii)
    )


def _decode_fallback(data: bytes) -> tuple[str, str]:
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is not None:
        return str(best), best.encoding
    return data.decode("utf-8", errors="replace"), "utf-8 (with replacements)"


def _read_text_file(path: Path) -> tuple[str, str]:
    text, encoding = decode_text(path.read_bytes())
    return _clean(text), encoding


# --------------------------------------------------------------------------- plain text, Markdown


def _parse_text(path: Path, limits: ParseLimits, deadline: _Deadline) -> ParsedDocument:
    text, encoding = _read_text_file(path)
    return ParsedDocument(text=text, format="text", metadata={"encoding": encoding})


def _parse_markdown(path: Path, limits: ParseLimits, deadline: _Deadline) -> ParsedDocument:
    text, encoding = _read_text_file(path)
    headings = find_markdown_headings(text)
    metadata: dict[str, Any] = {"encoding": encoding}
    if headings and headings[0][0] == 1:
        metadata["title"] = headings[0][1]
    return ParsedDocument(text=text, format="markdown", headings=headings, metadata=metadata)


_MD_LINE = re.compile(
    r"^ {0,3}(?:"
    r"(?P<fence>`{3,}|~{3,})[^\n]*"
    r"|(?P<hashes>#{1,6})(?:[ \t]+(?P<title>[^\n]*?))?(?:[ \t]+#+)?[ \t]*"
    r")$",
    re.MULTILINE,
)


def find_markdown_headings(text: str) -> list[tuple[int, str, int]]:
    """ATX headings (``# Title``) outside fenced code blocks: ``(level, title, offset)``."""
    headings: list[tuple[int, str, int]] = []
    fence: str | None = None
    for m in _MD_LINE.finditer(text):
        marker = m.group("fence")
        if marker is not None:
            if fence is None:
                fence = marker
            elif (
                marker[0] == fence[0] and len(marker) >= len(fence) and m.group(0).strip() == marker
            ):
                fence = None
            continue
        if fence is not None:
            continue
        title = (m.group("title") or "").strip()
        if title:
            headings.append((len(m.group("hashes")), title, m.start()))
    return headings


# --------------------------------------------------------------------------- HTML, EPUB chapters

# fmt: off
_SKIP_TAGS = frozenset({
    "script", "style", "noscript", "nav", "template", "svg", "math", "iframe", "object", "embed",
    "canvas", "head", "form", "button", "select", "textarea", "input", "audio", "video", "map",
})
# fmt: on
_SKIP_ROLES = frozenset({"navigation", "banner", "contentinfo", "search"})
_HEADING_TAGS = {f"h{i}": i for i in range(1, 7)}
# fmt: off
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "body", "center", "dd", "details", "dialog",
    "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "header", "hgroup", "hr",
    "html", "main", "ol", "p", "section", "summary", "ul", "caption", "tbody", "thead", "tfoot",
    "table", "tr", "td", "th",  # reached only inside layout tables
})
# fmt: on
_WS = re.compile(r"\s+")
_MAX_DEPTH = 150  # element nesting the walker follows (Python recursion stays well bounded)
_HTML_PARSER = lxml_html.HTMLParser(huge_tree=True, no_network=True)


def _local(tag: Any) -> str | None:
    """Lower-case local name of an element tag; None for comments and processing instructions."""
    if not isinstance(tag, str):
        return None
    if tag.startswith("{"):
        tag = tag.rsplit("}", 1)[1]
    return tag.lower()


def _skipped(el: etree._Element, tag: str) -> bool:
    if tag in _SKIP_TAGS:
        return True
    if el.get("hidden") is not None or el.get("aria-hidden") == "true":
        return True
    return el.get("role") in _SKIP_ROLES


class _HtmlWriter:
    """Walks an (X)HTML element tree and writes Markdown-ish blocks into a ``_TextBuilder``."""

    def __init__(self, builder: _TextBuilder, deadline: _Deadline) -> None:
        self.out = builder
        self.deadline = deadline
        self._inline: list[str] = []
        self._count = 0
        self._depth = 0
        self._lists = 0  # list nesting depth
        self._marker: str | None = None  # list item marker waiting for the item's first block
        self.drop: set[etree._Element] = set()  # navigation blocks (see html.py)
        self.dropped = 0

    def write(self, root: etree._Element, *, drop_site_chrome: bool = False) -> None:
        """Write ``root``'s content; ``drop_site_chrome`` skips its direct header/footer."""
        self.flush()
        self._text(root.text)
        for child in root:
            if not (drop_site_chrome and _local(child.tag) in ("header", "footer")):
                self._element(child)
            self._text(child.tail)
        self.flush()

    def flush(self) -> None:
        if not self._inline:
            return
        raw = "".join(self._inline)
        self._inline.clear()
        lines = [" ".join(line.split()) for line in raw.split("\n")]
        self._block("\n".join(line for line in lines if line))

    def _block(self, text: str) -> None:
        """A block; the first one of a list item gets the item's marker on its first line."""
        if self._marker is not None and text.strip():
            text, self._marker = self._marker + text.lstrip("\n"), None
        self.out.block(text)

    def _text(self, text: str | None) -> None:
        if text:
            self._inline.append(_WS.sub(" ", text))

    def _children(self, el: etree._Element) -> None:
        self._text(el.text)
        for child in el:
            self._element(child)
            self._text(child.tail)

    def _element(self, el: etree._Element) -> None:
        tag = _local(el.tag)
        if tag is None or _skipped(el, tag):
            return
        if el in self.drop:
            self.dropped += 1
            return
        if self._depth >= _MAX_DEPTH:  # pathological nesting: keep the text, skip structure
            self._text(" ".join(el.itertext()))
            return
        self._depth += 1
        try:
            self._structured(el, tag)
        finally:
            self._depth -= 1

    def _structured(self, el: etree._Element, tag: str) -> None:
        self._count += 1
        if self._count % 2000 == 0:
            self.deadline.check(f"{self._count} HTML elements")
        if tag in _HEADING_TAGS:
            self.flush()
            self.out.heading(_HEADING_TAGS[tag], _inline_text(el))
        elif tag == "pre":
            self.flush()
            self._block(_fenced("".join(el.itertext())))
        elif tag == "table" and not _is_layout_table(el):
            self.flush()
            self._block(_markdown_table(_html_table_rows(el)))
        elif tag == "br":
            self._inline.append("\n")
            self._children(el)  # recovered XHTML may hang the following text inside <br>
        elif tag == "li":
            self.flush()
            self._marker = "   " * max(self._lists - 1, 0) + _list_marker(el)
            self._children(el)
            self.flush()
            self._marker = None  # an empty item writes nothing
        elif tag in ("ol", "ul", "menu"):
            self.flush()
            self._lists += 1
            try:
                self._children(el)
            finally:
                self._lists -= 1
            self.flush()
        elif tag in _BLOCK_TAGS:
            self.flush()
            self._children(el)
            self.flush()
        else:
            self._children(el)


def _list_marker(li: etree._Element) -> str:
    """``"- "`` in a ``<ul>``, ``"3. "`` for the third item of an ``<ol>`` (``start`` and
    ``value`` honoured)."""
    parent = li.getparent()
    if parent is None or _local(parent.tag) != "ol":
        return "- "
    number = _int(parent.get("start"), 1)
    for sibling in parent:
        if _local(sibling.tag) != "li":
            continue
        number = _int(sibling.get("value"), number)
        if sibling is li:
            break
        number += 1
    return f"{number}. "


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _fenced(code: str) -> str:
    """``pre`` text as a fenced code block (so a ``# command`` line is never a heading)."""
    code = code.strip("\n")
    if not code.strip():
        return ""
    fence = "```"
    while fence in code:
        fence += "`"
    return f"{fence}\n{code}\n{fence}"


def _inline_text(el: etree._Element) -> str:
    parts: list[str] = []

    def walk(node: etree._Element) -> None:
        if node.text:
            parts.append(node.text)
        for child in node:
            tag = _local(child.tag)
            if tag == "br":
                parts.append(" ")
            elif tag is not None and not _skipped(child, tag):
                walk(child)
            if child.tail:
                parts.append(child.tail)

    walk(el)
    return " ".join("".join(parts).split())


_LAYOUT_MARKERS = frozenset({*_HEADING_TAGS, "p", "div", "ul", "ol", "table", "pre", "section"})


def _is_layout_table(table: etree._Element) -> bool:
    """Tables that hold headings, paragraphs or other tables lay out a page; they are not
    data, so their cells are walked as blocks instead of flattened into a Markdown table."""
    return any(_local(el.tag) in _LAYOUT_MARKERS for el in table.iterdescendants())


def _html_table_rows(table: etree._Element) -> list[list[str]]:
    rows: list[list[str]] = []
    for tr in table.iter():
        if _local(tr.tag) != "tr":
            continue
        cells = [_inline_text(c) for c in tr if _local(c.tag) in ("td", "th")]
        if cells:
            rows.append(cells)
    return rows


_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]+)", re.IGNORECASE)
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")


def _decode_html(data: bytes) -> tuple[str, str]:
    if not data.startswith(_BOMS):
        m = _META_CHARSET.search(data[:4096])
        if m:
            encoding = m.group(1).decode("ascii").lower()
            if encoding in ("gb2312", "gbk"):
                encoding = "gb18030"  # what browsers do, and a superset of both
            try:
                return data.decode(encoding), encoding
            except (LookupError, UnicodeDecodeError):
                pass
    return decode_text(data)


def _parse_html(path: Path, limits: ParseLimits, deadline: _Deadline) -> ParsedDocument:
    text, encoding = _decode_html(path.read_bytes())
    root = _html_root(_clean(text))
    title_el = root.find(".//title")
    builder = _TextBuilder()
    main, is_body = _main_content(root)
    writer = _HtmlWriter(builder, deadline)
    _write_main(writer, main, is_body=is_body)
    metadata: dict[str, Any] = {"encoding": encoding}
    if writer.dropped:
        metadata["navigation_blocks_dropped"] = writer.dropped
    if title_el is not None and title_el.text_content().strip():
        metadata["title"] = " ".join(title_el.text_content().split())
    return ParsedDocument(
        text=builder.text(), format="html", headings=builder.headings, metadata=metadata
    )


def _html_root(text: str) -> etree._Element:
    text = _XML_DECL.sub("", text, count=1)
    return lxml_html.document_fromstring(
        text if text.strip() else "<html></html>", parser=_HTML_PARSER
    )


def _write_main(writer: _HtmlWriter, main: etree._Element, *, is_body: bool) -> None:
    """Write the page's main content without its navigation blocks (see ``html.py``)."""
    stats = html.TextStats(main)
    if is_body:
        found = html.find_main(main, stats)
        is_body = found is main
        main = found
    writer.drop = html.navigation_blocks(main, stats)
    writer.write(main, drop_site_chrome=is_body)


def _main_content(root: etree._Element) -> tuple[etree._Element, bool]:
    """The element holding the page's main text: <main>, a single <article>, or <body>."""
    mains = root.xpath("//*[local-name()='main' or @role='main']")
    if mains:
        return mains[0], False
    articles = root.xpath("//*[local-name()='article']")
    if len(articles) == 1:
        return articles[0], False
    bodies = root.xpath("//*[local-name()='body']")
    return (bodies[0], True) if bodies else (root, False)


# --------------------------------------------------------------------------- EPUB

_XML_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, recover=True, huge_tree=False
)
_NS_OPF = "http://www.idpf.org/2007/opf"
_NS_DC = "http://purl.org/dc/elements/1.1/"
_XHTML_TYPES = ("application/xhtml+xml", "text/html", "application/x-dtbook+xml")


def _parse_epub(path: Path, limits: ParseLimits, deadline: _Deadline) -> ParsedDocument:
    with _open_checked_zip(path, limits, "EPUB") as zf:
        opf_path = _epub_rootfile(zf)
        opf = _xml(zf, opf_path)
        if opf is None:
            raise ParseError(f"corrupt EPUB file: package document {opf_path!r} is unreadable")
        chapters = _epub_spine(opf, opf_path)
        _refuse_drm(zf, chapters)
        builder = _TextBuilder()
        writer = _HtmlWriter(builder, deadline)
        chapter_starts: list[dict[str, Any]] = []
        for index, href in enumerate(chapters, start=1):
            deadline.check(f"chapter {index} of {len(chapters)}")
            body = _epub_chapter_body(zf, href)
            if body is None:
                continue
            start = builder.length
            _write_main(writer, body, is_body=True)
            if builder.length > start:
                chapter_starts.append({"href": href, "char_start": start + (2 if start else 0)})
    metadata = _epub_metadata(opf)
    metadata["chapters"] = chapter_starts
    return ParsedDocument(
        text=builder.text(), format="epub", headings=builder.headings, metadata=metadata
    )


def _xml(zf: zipfile.ZipFile, name: str) -> etree._Element | None:
    try:
        data = zf.read(name)
    except KeyError:
        return None
    if not data.strip():
        return None
    return etree.fromstring(data, _XML_PARSER)


def _epub_rootfile(zf: zipfile.ZipFile) -> str:
    container = _xml(zf, "META-INF/container.xml")
    if container is None:
        raise ParseError("corrupt EPUB file: META-INF/container.xml is missing or unreadable")
    for el in container.iter():
        if _local(el.tag) == "rootfile" and el.get("full-path"):
            return el.get("full-path")
    raise ParseError("corrupt EPUB file: container.xml names no package document")


def _epub_spine(opf: etree._Element, opf_path: str) -> list[str]:
    base = PurePosixPath(opf_path).parent
    manifest: dict[str, tuple[str, str]] = {}
    for item in opf.iter(f"{{{_NS_OPF}}}item", "item"):
        if item.get("id") and item.get("href"):
            manifest[item.get("id")] = (item.get("href"), item.get("media-type", ""))
    chapters: list[str] = []
    for ref in opf.iter(f"{{{_NS_OPF}}}itemref", "itemref"):
        href, media = manifest.get(ref.get("idref", ""), ("", ""))
        if href and (media in _XHTML_TYPES or not media):
            chapters.append(_join_zip_path(base, href))
    if not chapters:
        raise ParseError("corrupt EPUB file: the spine lists no readable chapters")
    return chapters


def _join_zip_path(base: PurePosixPath, href: str) -> str:
    from urllib.parse import unquote

    parts: list[str] = []
    for part in (base / unquote(href.split("#", 1)[0])).parts:
        if part == "..":
            if parts:
                parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return "/".join(parts)


_NAMED_ENTITY = re.compile(rb"&([A-Za-z][A-Za-z0-9]{1,31});")
_XML_ENTITIES = frozenset({b"amp", b"lt", b"gt", b"quot", b"apos"})


def _numeric_entities(data: bytes) -> bytes:
    """``&nbsp;`` -> ``&#160;``: XHTML chapters use HTML entities that only the DTD (which
    we never load) defines, and the XML parser would drop them."""
    from html.entities import name2codepoint

    def replace(m: re.Match[bytes]) -> bytes:
        name = m.group(1)
        if name in _XML_ENTITIES:
            return m.group(0)
        code = name2codepoint.get(name.decode("ascii"))
        return b"&#%d;" % code if code is not None else m.group(0)

    return _NAMED_ENTITY.sub(replace, data)


def _refuse_drm(zf: zipfile.ZipFile, chapters: list[str]) -> None:
    """Encrypted chapters (DRM) parse as garbage; font obfuscation alone is harmless."""
    encryption = _xml(zf, "META-INF/encryption.xml")
    if encryption is None:
        return
    encrypted = {
        _join_zip_path(PurePosixPath(""), el.get("URI", ""))
        for el in encryption.iter()
        if _local(el.tag) == "cipherreference"
    }
    if encrypted.intersection(chapters):
        raise ParseError("EPUB is DRM-protected (its chapters are encrypted)")


def _epub_chapter_body(zf: zipfile.ZipFile, name: str) -> etree._Element | None:
    try:
        data = zf.read(name)
    except KeyError:
        return None
    root = etree.fromstring(_numeric_entities(data), _XML_PARSER) if data.strip() else None
    if root is None:  # not well-formed even with recovery: fall back to the HTML parser
        root = _html_root(_clean(_decode_html(data)[0]))
    for el in root.iter():
        if _local(el.tag) == "body":
            return el
    return root


def _epub_metadata(opf: etree._Element) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for key, tag in (("title", "title"), ("author", "creator"), ("language", "language")):
        el = opf.find(f".//{{{_NS_DC}}}{tag}")
        if el is not None and el.text and el.text.strip():
            metadata[key] = el.text.strip()
    return metadata


# --------------------------------------------------------------------------- DOCX

_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_W_P, _W_TBL, _W_R, _W_HYPERLINK = f"{_W}p", f"{_W}tbl", f"{_W}r", f"{_W}hyperlink"
_W_SDT, _W_SDT_CONTENT, _W_TXBX = f"{_W}sdt", f"{_W}sdtContent", f"{_W}txbxContent"
_NOTE_REFS = {f"{_W}footnoteReference": "footnote", f"{_W}endnoteReference": "endnote"}
_NOTES_RELTYPE = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/{}s"


def _parse_docx(path: Path, limits: ParseLimits, deadline: _Deadline) -> ParsedDocument:
    """Page headers and footers, then the body, then footnotes and endnotes.

    Headers and footers repeat on every page, so no one place in the running text is
    theirs: they come first, before any heading (their chunks carry an empty heading path
    and never join the body's last section), each distinct part once (sections that link
    to the previous section's header share its part). Text boxes follow the paragraph (or
    table) they are anchored in.
    """
    _open_checked_zip(path, limits, "DOCX").close()
    import docx

    try:
        document = docx.Document(str(path))
    except Exception as exc:
        raise ParseError(f"corrupt DOCX file: {type(exc).__name__}: {exc}") from exc
    builder = _TextBuilder()
    notes = {kind: _DocxNotes(kind, _docx_notes_root(document, kind)) for kind in _DOCX_NOTES}
    writer = _DocxWriter(builder, _docx_style_names(document), deadline, notes)
    counts = {
        f"{kind}_parts": writer.parts(_docx_page_parts(document, kind))
        for kind in ("header", "footer")
    }
    writer.container(document.element.body)
    for kind, title in _DOCX_NOTES.items():
        counts[f"{kind}s"] = writer.notes_section(notes[kind], title)
    counts["text_boxes"] = writer.text_boxes
    metadata = _docx_metadata(document)
    read = {key: value for key, value in counts.items() if value}
    if read:
        metadata["docx_parts"] = read
    return ParsedDocument(
        text=_clean(builder.text()), format="docx", headings=builder.headings, metadata=metadata
    )


_DOCX_NOTES = {"footnote": "Footnotes", "endnote": "Endnotes"}


class _DocxWriter:
    """Writes WordprocessingML block content (body, header, footer, note, text box) as blocks.

    Works on the XML elements (python-docx's ``CT_P``/``CT_Tbl``) rather than on its proxy
    objects, because only the body has a proxy container; headers, notes and text boxes
    are plain element trees here.
    """

    def __init__(
        self,
        builder: _TextBuilder,
        style_names: dict[str | None, str],
        deadline: _Deadline,
        notes: dict[str, _DocxNotes],
    ) -> None:
        self.out = builder
        self.style_names = style_names
        self.deadline = deadline
        self.notes = notes
        self.text_boxes = 0
        self._blocks = 0
        self._mark_notes = any(n.bodies for n in notes.values())

    def parts(self, parts: list[Any]) -> int:
        """Write header or footer parts; return how many of them held text."""
        written = 0
        for part in parts:
            before = self.out.length
            self.container(part.element)
            written += self.out.length > before
        return written

    def container(self, element: Any) -> None:
        # one scan per container; most documents have no text boxes at all
        boxes = next(element.iter(_W_TXBX), None) is not None
        for block in _docx_blocks(element):
            self._blocks += 1
            if self._blocks % 1000 == 0:
                self.deadline.check(f"{self._blocks} DOCX blocks")
            if block.tag == _W_TBL:
                self.out.block(_markdown_table(self._table_rows(block)))
            else:
                self._paragraph(block)
            if boxes:
                for box in _docx_text_boxes(block):
                    self.text_boxes += 1
                    self.container(box)

    def notes_section(self, notes: _DocxNotes, title: str) -> int:
        """Footnotes or endnotes under their own heading, as ``[^label]: text`` blocks.

        The heading ends the last body section, so chunks of notes do not carry the body's
        last heading path.
        """
        rendered = [(label, self._render(note)) for label, note in notes.in_order()]
        rendered = [(label, text) for label, text in rendered if text]
        if rendered:
            self.out.heading(1, title)
            for label, text in rendered:
                self.out.block(f"[^{label}]: {text}")
        return len(rendered)

    def _render(self, element: Any) -> str:
        outer, self.out = self.out, _TextBuilder()
        try:
            self.container(element)
            return self.out.text().strip()
        finally:
            self.out = outer

    def _paragraph(self, p: Any) -> None:
        text = self._paragraph_text(p)
        if not text.strip():
            return
        style = self.style_names.get(p.style, self.style_names[None])  # p.style: w:pStyle
        m = _HEADING_STYLE.match(style)
        if m and int(m.group(1)) > 0:
            self.out.heading(int(m.group(1)), text)
        elif style == "Title":
            self.out.heading(1, text)
        elif style.startswith("List Bullet"):
            self.out.block("- " + text.strip())
        elif style.startswith("List Number"):
            self.out.block("1. " + text.strip())
        else:
            self.out.block(text)

    def _paragraph_text(self, p: Any) -> str:
        """``p.text`` (runs and hyperlinks), with ``[^1]`` where a note is referenced."""
        if not self._mark_notes:
            return p.text
        parts: list[str] = []
        for child in p.iterchildren(_W_R, _W_HYPERLINK):
            for run in [child] if child.tag == _W_R else child.iterchildren(_W_R):
                parts.append(run.text)
                for ref in run.iterchildren(*_NOTE_REFS):
                    parts.append(self.notes[_NOTE_REFS[ref.tag]].mark(ref.get(f"{_W}id")))
        return "".join(parts)

    def _table_rows(self, tbl: Any) -> list[list[str]]:
        from docx.table import Table

        # the parent is only needed to reach the part (images, styles); text needs none
        return [
            [
                "\n".join(self._paragraph_text(p) for p in cell._tc.iterchildren(_W_P))
                for cell in row.cells
            ]
            for row in Table(tbl, None).rows  # type: ignore[arg-type]
        ]


def _docx_blocks(container: Any) -> Iterator[Any]:
    """``w:p`` and ``w:tbl`` children in document order, including those inside block-level
    content controls (``w:sdt``), which python-docx's ``iter_inner_content`` skips."""
    for child in container.iterchildren(_W_P, _W_TBL, _W_SDT):
        if child.tag == _W_SDT:
            for content in child.iterchildren(_W_SDT_CONTENT):
                yield from _docx_blocks(content)
        else:
            yield child


def _docx_text_boxes(block: Any) -> Iterator[Any]:
    """Text boxes anchored in ``block``, each once, in document order.

    Word writes a DrawingML text box inside ``mc:AlternateContent`` with a VML copy of the
    same box in ``mc:Fallback``; the fallback is read only when no ``mc:Choice`` holds a
    text box. Boxes nested in another box are left to the outer box's own walk.
    """
    for box in block.iter(_W_TXBX):
        if not _docx_shadowed(box, block):
            yield box


def _docx_shadowed(box: Any, stop: Any) -> bool:
    for ancestor in box.iterancestors():
        if ancestor is stop:
            return False
        if ancestor.tag == _W_TXBX:
            return True
        if ancestor.tag == f"{_MC}Fallback":
            choices = ancestor.getparent().iterchildren(f"{_MC}Choice")
            if any(next(c.iter(_W_TXBX), None) is not None for c in choices):
                return True
    return False


class _DocxNotes:
    """Footnotes or endnotes, labelled in the order the text first references them.

    Labels follow Word's default number formats: footnotes 1, 2, 3; endnotes i, ii, iii
    (a document's own format or restart settings are not read). Notes that nothing
    references are listed after the referenced ones; separator notes are skipped.
    """

    def __init__(self, kind: str, root: Any | None) -> None:
        self.kind = kind
        self.bodies: dict[str, Any] = {}
        if root is not None:
            for note in root.iterchildren(f"{_W}{kind}"):
                note_id = note.get(f"{_W}id")
                if note_id is not None and note.get(f"{_W}type", "normal") == "normal":
                    self.bodies[note_id] = note
        self.labels: dict[str, str] = {}

    def mark(self, note_id: str | None) -> str:
        if note_id not in self.bodies:
            return ""  # dangling reference: nothing to point at
        label = self.labels.get(note_id)
        if label is None:
            label = self.labels[note_id] = self._label(len(self.labels) + 1)
        return f"[^{label}]"

    def in_order(self) -> list[tuple[str, Any]]:
        for note_id in self.bodies:
            self.mark(note_id)  # unreferenced notes get the next labels
        return [(label, self.bodies[note_id]) for note_id, label in self.labels.items()]

    def _label(self, number: int) -> str:
        return str(number) if self.kind == "footnote" else _roman(number)


def _roman(number: int) -> str:
    out = []
    for value, letters in (
        (1000, "m"),
        (900, "cm"),
        (500, "d"),
        (400, "cd"),
        (100, "c"),
        (90, "xc"),
        (50, "l"),
        (40, "xl"),
        (10, "x"),
        (9, "ix"),
        (5, "v"),
        (4, "iv"),
        (1, "i"),
    ):
        count, number = divmod(number, value)
        out.append(letters * count)
    return "".join(out)


def _docx_notes_root(document: Any, kind: str) -> Any | None:
    """Root of the footnotes or endnotes part (python-docx has no API for them)."""
    from docx.oxml.parser import parse_xml

    for rel in document.part.rels.values():
        if rel.reltype != _NOTES_RELTYPE.format(kind) or rel.is_external:
            continue
        part = rel.target_part
        try:
            return parse_xml(part.blob)  # python-docx's parser: no entities, no network
        except etree.XMLSyntaxError as exc:
            raise ParseError(
                f"corrupt DOCX file: {part.partname} is not valid XML ({exc})"
            ) from exc
    return None


def _docx_page_parts(document: Any, kind: str) -> list[Any]:
    """Header (or footer) parts that some page shows, each once, in section order.

    A section's first-page part counts only when the section has a distinct first page,
    and the even-page part only when the document has distinct odd and even pages: Word
    keeps the others in the file but never shows them.
    """
    even_pages = document.settings.odd_and_even_pages_header_footer
    related = document.part.related_parts
    parts: list[Any] = []
    seen: set[str] = set()
    for section in document.sections:
        refs = {
            ref.get(f"{_W}type", "default"): ref.get(f"{_R}id")
            for ref in section._sectPr.iterchildren(f"{_W}{kind}Reference")
        }
        for page in ("first", "default", "even"):
            if page == "first" and not section.different_first_page_header_footer:
                continue
            if page == "even" and not even_pages:
                continue
            part = related.get(refs.get(page))
            if part is not None and str(part.partname) not in seen:
                seen.add(str(part.partname))
                parts.append(part)
    return parts


def _docx_style_names(document: Any) -> dict[str | None, str]:
    """Paragraph style id -> name, ``None`` -> the default paragraph style's name.

    ``Paragraph.style`` searches the whole style sheet on every call (quadratic on big
    documents: 10 s for 3,000 paragraphs); one lookup table makes it linear.
    """
    from docx.enum.style import WD_STYLE_TYPE

    names: dict[str | None, str] = {}
    for style in document.styles:
        if style.type == WD_STYLE_TYPE.PARAGRAPH and style.style_id:
            names[style.style_id] = style.name or ""
    default = document.styles.default(WD_STYLE_TYPE.PARAGRAPH)
    names[None] = default.name if default is not None else ""
    return names


def _docx_metadata(document: Any) -> dict[str, Any]:
    props = document.core_properties
    metadata: dict[str, Any] = {}
    for key in ("title", "author", "language", "subject"):
        value = getattr(props, key, None)
        if value:
            metadata[key] = str(value)
    if props.created is not None:
        metadata["created"] = props.created.isoformat()
    return metadata


# --------------------------------------------------------------------------- PDF


def _parse_pdf(path: Path, limits: ParseLimits, deadline: _Deadline) -> ParsedDocument:
    source = _open_pdf_source(path)
    try:
        return _read_pdf(source, path, limits, deadline)
    finally:
        source.close()


def _read_pdf(
    source: _PdfiumSource | _PypdfSource, path: Path, limits: ParseLimits, deadline: _Deadline
) -> ParsedDocument:
    page_total = source.page_count
    if page_total > limits.max_pages:
        raise ParseError(f"PDF has {page_total} pages, over the limit of {limits.max_pages}")
    raw: list[str] = []
    failed: list[int] = []
    garbled: list[int] = []
    scans = _PdfOcr(path, limits, deadline)
    try:
        for index in range(page_total):
            where = f"PDF page {index + 1} of {page_total}"
            deadline.check(where)
            try:
                page_text = pdf.normalize_page(source.text(index, deadline, where))
            except ParseError:
                raise
            except Exception:  # noqa: BLE001 - one damaged page should not lose the whole document
                failed.append(index + 1)
                page_text = ""
            deadline.check(where)  # PDFium reads a page in one call: check after it too
            bad_layer = pdf.looks_garbled(page_text)
            if bad_layer:
                garbled.append(index + 1)
            if bad_layer:
                page_text = scans.page(index, page_text, where, _GARBLED)
            elif ocr.needs_ocr(page_text) and source.has_images(index):
                page_text = scans.page(index, page_text, where)
            raw.append(page_text)
    finally:
        scans.close()
    if not any(t.strip() for t in raw) and scans.needed:
        raise ParseError(scans.empty_reason())
    cleaned, cleanup = pdf.clean_pages(raw)
    parts: list[str] = []
    pages: list[tuple[int, int, int]] = []
    length = 0
    for number, page_text in enumerate(cleaned, start=1):
        if parts:
            parts.append("\n\n")
            length += 2
        pages.append((number, length, length + len(page_text)))
        parts.append(page_text)
        length += len(page_text)
    metadata: dict[str, Any] = {"page_count": page_total, "pdf_engine": source.engine}
    metadata.update(source.metadata())
    metadata["pdf_cleanup"] = cleanup.as_dict()
    if failed:
        metadata["failed_pages"] = failed
    if garbled:
        metadata["garbled_pages"] = garbled
    scans.report(metadata)
    return ParsedDocument(
        text="".join(parts),
        format="pdf",
        pages=pages,
        headings=source.headings(pages),
        metadata=metadata,
    )


_GARBLED = "garbled text layer (mostly unmapped glyphs)"


def _open_pdf_source(path: Path) -> _PdfiumSource | _PypdfSource:
    """PDFium, or pypdf where PDFium cannot open the file (or is not installed)."""
    try:
        return _PdfiumSource(path)
    except pdf.PdfiumPasswordError as exc:
        raise ParseError("encrypted PDF: a password is required to open it") from exc
    except Exception:  # noqa: BLE001 - PDFium refused the file; pypdf may still read it
        return _PypdfSource(path)


class _PypdfSource:
    """Pages through pypdf: the fallback reader (and per page, PDFium's)."""

    engine = "pypdf"

    def __init__(self, path: Path) -> None:
        self.reader = _open_pdf(path)
        self.page_count = len(self.reader.pages)

    def text(self, index: int, deadline: _Deadline, where: str) -> str:
        return _pdf_page_text(self.reader.pages[index], deadline, where) or ""

    def has_images(self, index: int) -> bool:
        return _pdf_page_has_images(self.reader.pages[index])

    def metadata(self) -> dict[str, Any]:
        return _pdf_metadata(self.reader)

    def headings(self, pages: list[tuple[int, int, int]]) -> list[tuple[int, str, int]]:
        return _pdf_outline_headings(self.reader, pages)

    def close(self) -> None:
        pass


class _PdfiumSource:
    """Pages through PDFium (see ``pdf.py``); a page PDFium fails on is read by pypdf."""

    engine = "pdfium"

    def __init__(self, path: Path) -> None:
        self.path = path
        with ocr.PDFIUM_LOCK:
            self.doc = pdf.PdfiumDocument(path)
            self.page_count = len(self.doc)
        self._fallback: _PypdfSource | None = None

    def text(self, index: int, deadline: _Deadline, where: str) -> str:
        try:
            with ocr.PDFIUM_LOCK:
                return self.doc.page_text(index)
        except Exception:  # noqa: BLE001 - try the other reader on this page
            if self._fallback is None:
                self._fallback = _PypdfSource(self.path)
            return self._fallback.text(index, deadline, where)

    def has_images(self, index: int) -> bool:
        with ocr.PDFIUM_LOCK:
            return self.doc.page_has_images(index)

    def metadata(self) -> dict[str, Any]:
        with ocr.PDFIUM_LOCK:
            return dict(self.doc.metadata())

    def headings(self, pages: list[tuple[int, int, int]]) -> list[tuple[int, str, int]]:
        with ocr.PDFIUM_LOCK:
            outline = list(self.doc.outline())
        headings = [
            (min(level, 6), title, pages[index][1])
            for level, title, index in outline
            if 0 <= index < len(pages)
        ]
        headings.sort(key=lambda h: h[2])
        return headings

    def close(self) -> None:
        with ocr.PDFIUM_LOCK:
            self.doc.close()


class _PdfOcr:
    """OCR of the scanned pages of one PDF (see ``ocr.py``): finds the engine and opens the
    renderer on the first page that needs them, and keeps what the metadata reports."""

    def __init__(self, path: Path, limits: ParseLimits, deadline: _Deadline) -> None:
        self.limits = limits
        self.deadline = deadline
        self.renderer = ocr.PageRenderer(path)
        self.engine: ocr.OcrEngine | None = None
        self.unavailable: str | None = None
        self.dpi: int | None = None
        self.needed: list[int] = []
        self.done: list[int] = []
        self.empty: list[int] = []
        self.skipped: list[int] = []
        self.warnings: list[str] = []

    def page(
        self, index: int, layer_text: str, where: str, why: str = "no text layer (scanned image?)"
    ) -> str:
        """The page's text: OCR's if it found any, else ``layer_text`` (plus a warning that
        starts with ``why``, the reason the page needed OCR)."""
        page_no = index + 1
        short = why.split(" (")[0]
        self.needed.append(page_no)
        engine = self._engine()
        if engine is None:
            return self._skip(
                page_no,
                layer_text,
                f"{why} and OCR is unavailable: {self.unavailable}; {ocr.INSTALL_HINT}",
            )
        where = f"OCR of {where}"
        self.deadline.check(where)
        timeout, budget_bound = self.limits.ocr_page_seconds, False
        try:
            image, dpi = self.renderer.render(index, dpi=ocr.OCR_DPI)
            self.dpi = ocr.OCR_DPI
            self.deadline.check(where)
            timeout = min(self.limits.ocr_page_seconds, self.deadline.remaining())
            budget_bound = timeout < self.limits.ocr_page_seconds
            text = ocr.recognize(engine, image, timeout=timeout, dpi=dpi)
        except ocr.OcrTimeout:
            if budget_bound:  # the file's budget ran out: the usual refusal
                self.deadline.check(where)
                raise ParseError(
                    f"parsing exceeded the time budget of {self.deadline.seconds:g} s ({where})"
                )
            return self._skip(
                page_no,
                layer_text,
                f"{short}; OCR timed out after {timeout:.3g} s (ParseLimits.ocr_page_seconds)",
            )
        except ocr.OcrUnavailable as exc:  # pypdfium2 missing
            self.unavailable = str(exc)
            return self._skip(
                page_no,
                layer_text,
                f"{why} and OCR is unavailable: {exc}",
            )
        except ocr.OcrFailed as exc:
            return self._skip(page_no, layer_text, f"{short}; {exc}")
        if not text.strip():
            self.empty.append(page_no)
            return layer_text
        self.done.append(page_no)
        return text

    def _engine(self) -> ocr.OcrEngine | None:
        if self.engine is None and self.unavailable is None:
            try:
                self.engine = ocr.find_engine()
            except ocr.OcrUnavailable as exc:
                self.unavailable = str(exc)
        return self.engine if self.unavailable is None else None

    def _skip(self, page_no: int, layer_text: str, why: str) -> str:
        self.skipped.append(page_no)
        self.warnings.append(f"page {page_no}: {why}")
        return layer_text

    def empty_reason(self) -> str:
        """Why a PDF whose every page came out empty is refused."""
        pages = _page_ranges(self.needed)
        if self.unavailable is not None:
            return (
                f"PDF has no text layer (scanned images on page(s) {pages}) and OCR is "
                f"unavailable: {self.unavailable}; {ocr.INSTALL_HINT}"
            )
        if self.skipped:
            return f"PDF has no text layer and OCR failed: {'; '.join(self.warnings[:3])}"
        return f"PDF has no text layer and OCR found no text on its scanned page(s) {pages}"

    def report(self, metadata: dict[str, Any]) -> None:
        if not self.needed:
            return
        engine = self.engine if self.unavailable is None else None
        info: dict[str, Any] = {
            "engine": engine.name if engine else None,
            "languages": list(engine.languages) if engine else [],
            "dpi": self.dpi,
            "pages": self.done,
        }
        if self.empty:
            info["empty_pages"] = self.empty
        if self.skipped:
            info["skipped_pages"] = self.skipped
        if engine and engine.missing_languages:
            info["missing_languages"] = list(engine.missing_languages)
        if self.unavailable:
            info["unavailable"] = self.unavailable
        metadata["ocr"] = info
        if self.warnings:
            metadata.setdefault("warnings", []).extend(self.warnings)

    def close(self) -> None:
        self.renderer.close()


def _page_ranges(numbers: list[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3, 5"``."""
    ranges: list[str] = []
    start = prev = None
    for n in [*numbers, None]:
        if n is not None and prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            ranges.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = n
    return ", ".join(ranges)


_INLINE_IMAGE = re.compile(rb"(?:^|\s)BI\s")


def _pdf_page_has_images(page: Any) -> bool:
    """Whether the page draws an image: an image XObject in its resources (also inside form
    XObjects, a few levels deep) or an inline image in its content. Resources that the
    content does not use count too; OCR of such a page finds nothing and costs a second."""
    try:
        if _resources_have_image(page.get("/Resources"), depth=0, seen=set()):
            return True
        contents = page.get_contents()
        return contents is not None and _INLINE_IMAGE.search(contents.get_data()) is not None
    except Exception:  # noqa: BLE001 - a damaged page: nothing to OCR that we can find
        return False


def _resources_have_image(resources: Any, depth: int, seen: set[int]) -> bool:
    resources = resources.get_object() if resources is not None else None
    if not resources or "/XObject" not in resources:
        return False
    xobjects = resources["/XObject"].get_object()
    for ref in xobjects.values():
        key = getattr(ref, "idnum", None)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        xobject = ref.get_object()
        subtype = xobject.get("/Subtype")
        if subtype == "/Image":
            return True
        if (
            subtype == "/Form"
            and depth < 4
            and _resources_have_image(xobject.get("/Resources"), depth + 1, seen)
        ):
            return True
    return False


def _pdf_page_text(page: Any, deadline: _Deadline, where: str) -> str:
    """The page's text layer, with the time budget also checked inside the page.

    pypdf calls ``visitor_operand_before`` for every operator it interprets, so checking the
    deadline there stops a page with hundreds of thousands of text operators (interpreting
    them is ~3/4 of its time; a 6 MB content stream takes 14 s). A visitor makes pypdf parse
    content streams it would otherwise skip for holding no text at all (100x slower on
    drawing-only pages), so it is attached only when the page's own content opens a text
    object (``BT``). Not bounded: tokenising the content stream before the first operator
    (linear in its size, which pypdf caps at 75 MB decoded) and text inside form XObjects
    of a page whose own content has none.
    """
    if not _pdf_page_has_text_object(page):
        return page.extract_text()
    operators = 0

    def check(*_: Any) -> None:
        nonlocal operators
        operators += 1
        if operators % 1024 == 0:
            deadline.check(f"inside {where}")

    return page.extract_text(visitor_operand_before=check)


def _pdf_page_has_text_object(page: Any) -> bool:
    try:
        contents = page.get_contents()  # decoded data is cached for extract_text
        return contents is not None and b"BT" in contents.get_data()
    except Exception:  # noqa: BLE001 - let extract_text meet (and report) the damage
        return False


def _open_pdf(path: Path) -> Any:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, PdfReadError

    try:
        reader = PdfReader(str(path), strict=False)
    except PdfReadError as exc:
        raise ParseError(f"corrupt PDF file: {exc}") from exc
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")
        except DependencyError as exc:
            raise ParseError(f"encrypted PDF: cannot decrypt ({exc})") from exc
        except Exception as exc:
            raise ParseError(f"encrypted PDF: cannot decrypt ({type(exc).__name__})") from exc
        if not opened:
            raise ParseError("encrypted PDF: a password is required to open it")
    return reader


def _pdf_metadata(reader: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    try:
        info = reader.metadata
    except Exception:  # noqa: BLE001 - metadata is optional; broken info dicts are common
        info = None
    if info:
        for key, attr in (("title", "title"), ("author", "author"), ("producer", "producer")):
            value = getattr(info, attr, None)
            if value and str(value).strip():
                metadata[key] = str(value).strip()
    return metadata


def _pdf_outline_headings(
    reader: Any, pages: list[tuple[int, int, int]]
) -> list[tuple[int, str, int]]:
    """Bookmarks as headings; the offset is the start of the page they point to."""
    headings: list[tuple[int, str, int]] = []
    try:
        for level, item in _walk_outline(reader.outline, 1):
            page_index = reader.get_destination_page_number(item)
            title = " ".join(str(item.title or "").split())
            if title and page_index is not None and 0 <= page_index < len(pages):
                headings.append((min(level, 6), title, pages[page_index][1]))
    except Exception:  # noqa: BLE001 - bookmarks are optional; damaged outlines are common
        return []
    headings.sort(key=lambda h: h[2])
    return headings


def _walk_outline(items: Iterable[Any], level: int) -> Iterator[tuple[int, Any]]:
    for item in items:
        if isinstance(item, list):
            yield from _walk_outline(item, level + 1)
        else:
            yield level, item


_PARSERS = {
    "pdf": _parse_pdf,
    "docx": _parse_docx,
    "epub": _parse_epub,
    "html": _parse_html,
    "markdown": _parse_markdown,
    "text": _parse_text,
}
