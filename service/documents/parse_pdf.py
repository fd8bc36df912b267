"""PDF: PDFium (``pypdfium2``) page by page, ``pypdf`` where PDFium cannot open a file or a page,
OCR for scanned or garbled pages.

``pdf.py`` holds the PDFium reader and the per-page clean-up, ``ocr.py`` the OCR engine; this
module drives them and records ``pdf_engine``, ``pdf_cleanup``, ``garbled_pages``,
``failed_pages`` and ``ocr`` in the metadata. See ``parsing.py`` for the parser choice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from service.documents import ocr, pdf
from service.documents.parse_types import (
    Deadline,
    ParsedDocument,
    ParseError,
    ParseLimits,
    Progress,
)

__all__ = [
    "parse_pdf",
]


def parse_pdf(
    path: Path, limits: ParseLimits, deadline: Deadline, progress: Progress
) -> ParsedDocument:
    """Page by page; ``progress`` counts pages (OCR included), the clean-up that needs every
    page (running headers, headings) comes after the last one."""
    source = _open_pdf_source(path)
    try:
        return _read_pdf(source, path, limits, deadline, progress)
    finally:
        source.close()


def _read_pdf(
    source: _PdfiumSource | _PypdfSource,
    path: Path,
    limits: ParseLimits,
    deadline: Deadline,
    progress: Progress,
) -> ParsedDocument:
    page_total = source.page_count
    if page_total > limits.max_pages:
        raise ParseError(f"PDF has {page_total} pages, over the limit of {limits.max_pages}")
    progress.start(page_total)
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
            progress.advance()
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
    text = "".join(parts)
    return ParsedDocument(
        text=text,
        format="pdf",
        pages=pages,
        headings=pdf.place_headings(text, pages, source.outline()),
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

    def text(self, index: int, deadline: Deadline, where: str) -> str:
        return _pdf_page_text(self.reader.pages[index], deadline, where) or ""

    def has_images(self, index: int) -> bool:
        return _pdf_page_has_images(self.reader.pages[index])

    def metadata(self) -> dict[str, Any]:
        return _pdf_metadata(self.reader)

    def outline(self) -> list[tuple[int, str, int]]:
        return _pdf_outline(self.reader)

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

    def text(self, index: int, deadline: Deadline, where: str) -> str:
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

    def outline(self) -> list[tuple[int, str, int]]:
        with ocr.PDFIUM_LOCK:
            return list(self.doc.outline())

    def close(self) -> None:
        with ocr.PDFIUM_LOCK:
            self.doc.close()


class _PdfOcr:
    """OCR of the scanned pages of one PDF (see ``ocr.py``): finds the engine and opens the
    renderer on the first page that needs them, and keeps what the metadata reports."""

    def __init__(self, path: Path, limits: ParseLimits, deadline: Deadline) -> None:
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


def _pdf_page_text(page: Any, deadline: Deadline, where: str) -> str:
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


def _pdf_outline(reader: Any) -> list[tuple[int, str, int]]:
    """``(level, title, page_index)`` of each bookmark that points to a page, in outline order."""
    outline: list[tuple[int, str, int]] = []
    try:
        for level, item in _walk_outline(reader.outline, 1):
            page_index = reader.get_destination_page_number(item)
            title = " ".join(str(item.title or "").split())
            if title and page_index is not None:
                outline.append((level, title, page_index))
    except Exception:  # noqa: BLE001 - bookmarks are optional; damaged outlines are common
        return []
    return outline


def _walk_outline(items: Iterable[Any], level: int) -> Iterator[tuple[int, Any]]:
    for item in items:
        if isinstance(item, list):
            yield from _walk_outline(item, level + 1)
        else:
            yield level, item
