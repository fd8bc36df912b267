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
  line wraps), all done per page so page numbers stay exact. ~630 pages/s of text pages on a
  real 261-page manual (English; ~570 for its Chinese edition; bare PDFium text ~1,000 and
  ~770), ~330 / ~300 with its image-only cover OCR'd (Tesseract, ~0.4 s), against 31-38 with
  pypdf (docs/benchmarks.md, Ingest, 2026-12-02).
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

Modules: ``parsing.py`` is the entry point (``parse_document``) and re-exports the public names.
``parse_types.py`` holds ``ParsedDocument``, ``ParseError``, ``ParseLimits`` and the time
budget, ``detect.py`` the format detection, ``zipguard.py`` the ZIP checks; one module per
format family reads the file: ``parse_pdf.py``, ``parse_docx.py``, ``parse_epub.py``,
``parse_html.py`` and ``parse_text.py`` (plain text, Markdown, and the Markdown-flavoured
blocks and tables every parser writes).
"""

from __future__ import annotations

import os
from pathlib import Path

from service.documents.detect import detect_format
from service.documents.parse_docx import parse_docx
from service.documents.parse_epub import parse_epub
from service.documents.parse_html import parse_html
from service.documents.parse_pdf import parse_pdf
from service.documents.parse_text import (
    decode_text,
    find_markdown_headings,
    parse_markdown,
    parse_text,
)
from service.documents.parse_types import (
    FORMATS,
    Deadline,
    ParsedDocument,
    ParseError,
    ParseLimits,
    Progress,
    ProgressCallback,
    megabytes,
)
from service.documents.zipguard import check_zip_limits

__all__ = [
    "FORMATS",
    "ParseError",
    "ParseLimits",
    "ParsedDocument",
    "Progress",
    "ProgressCallback",
    "check_zip_limits",
    "decode_text",
    "detect_format",
    "find_markdown_headings",
    "parse_document",
]


def parse_document(
    path: str | os.PathLike[str],
    *,
    filename: str,
    content_type: str | None = None,
    limits: ParseLimits = ParseLimits(),  # noqa: B008 - a frozen dataclass (parse_types.py)
    on_progress: ProgressCallback | None = None,
) -> ParsedDocument:
    """Parse the file at ``path`` (uploaded as ``filename``) into a ``ParsedDocument``.

    Raises ``ParseError`` for unsupported, encrypted, corrupt or over-limit files and for files
    with no extractable text. ``on_progress(done, total)`` hears how far the parse has got
    (see ``Progress``: PDF pages, EPUB chapters, ...), ending at ``total`` of ``total``; an
    exception it raises ends the parse and comes out of here unchanged.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise ParseError(
            f"file is {megabytes(size)}, over the limit of {megabytes(limits.max_file_bytes)}"
        )
    fmt = detect_format(path, filename=filename, content_type=content_type)
    deadline = Deadline(limits.max_seconds)
    parser = _PARSERS[fmt]
    progress = Progress(on_progress)
    try:
        doc = parser(path, limits, deadline, progress)
    except ParseError:
        raise
    except (MemoryError, RecursionError) as exc:
        raise ParseError(f"{fmt.upper()} is too large or too deeply nested to parse") from exc
    except Exception as exc:  # third-party parsers raise many types for damaged files
        if exc is progress.raised:  # the caller's own stop (a lost lease), not a damaged file
            raise
        raise ParseError(
            f"corrupt or unreadable {fmt.upper()}: {type(exc).__name__}: {exc}"
        ) from exc
    if not doc.text.strip():
        raise ParseError(_EMPTY_REASONS.get(fmt, "no text could be extracted"))
    progress.finish()
    doc.metadata.setdefault("chars", len(doc.text))
    return doc


_EMPTY_REASONS = {
    "pdf": "PDF has no text layer and no page images to OCR (blank pages?)",
}


_PARSERS = {
    "pdf": parse_pdf,
    "docx": parse_docx,
    "epub": parse_epub,
    "html": parse_html,
    "markdown": parse_markdown,
    "text": parse_text,
}
