"""Per-document quality report: would a person accept these chunks as training context?

Pure Python; ``service.py`` stores the report as ``Document.meta["quality"]`` each time a
document is chunked (parse and re-chunk), the API returns it as ``DocumentRead.quality`` and
the document page shows its warnings.

What it measures (all from the parsed document and its chunks):

- **glue**: a "word" of ``GLUE_LETTERS`` (25) or more Latin/Greek/Cyrillic letters in a row,
  outside fenced code and outside tokens that look like URLs, paths, e-mail addresses or
  identifiers (``://``, ``www.``, ``@``, ``/``, ``\\``, ``_``, ``=``). English words that long
  are rare (``internationalization`` has 20 letters); runs that long are words whose spaces
  the text layer lost. Chinese and Japanese have no spaces and are not counted.
  ``glued_chunk_share`` is the share of chunks holding at least one.
- **furniture**: running headers/footers removed from PDF pages (see ``pdf.py``), as a
  share of the page text before removal; table-of-contents pages and dot-leader lines
  left out; HTML navigation blocks dropped (see ``html.py``).
- **replacement characters** (U+FFFD): bytes or glyphs that could not be decoded.
- **empty pages**: PDF pages with no text after OCR (TOC pages emptied on purpose are not
  counted), **OCR pages** and **garbled pages** (a text layer of unmapped glyphs).

``warnings`` lists each measure past its threshold in ``QualityThresholds``, in words a data
lead can act on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.documents.parsing import ParsedDocument

__all__ = ["GLUE_LETTERS", "QualityThresholds", "glued_words", "quality_report"]

GLUE_LETTERS = 25
_GLUE = re.compile(rf"[A-Za-z\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff]{{{GLUE_LETTERS},}}")
_CANDIDATE = re.compile(rf"\S{{{GLUE_LETTERS},}}")
_NOT_PROSE = re.compile(r"://|www\.|@|/|\\|_|=")
_FENCE = re.compile(r"^(`{3,}|~{3,})[^\n]*\n.*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class QualityThresholds:
    """Where a measure turns into a warning (shares are 0..1)."""

    glued_chunk_share: float = field(
        default=0.01, metadata={"help": "Most chunks with a glued word before a warning."}
    )
    furniture_share: float = field(
        default=0.10,
        metadata={"help": "Most page text removed as headers/footers before a warning."},
    )
    replacement_share: float = field(
        default=0.001, metadata={"help": "Most U+FFFD characters per character of text."}
    )
    empty_page_share: float = field(
        default=0.10, metadata={"help": "Most PDF pages without text before a warning."}
    )
    ocr_page_share: float = field(
        default=0.0, metadata={"help": "Most pages read by OCR before a warning."}
    )

    def __post_init__(self) -> None:
        for name in (
            "glued_chunk_share",
            "furniture_share",
            "replacement_share",
            "empty_page_share",
            "ocr_page_share",
        ):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"QualityThresholds.{name} must be between 0 and 1")


class _Chunk(Protocol):
    text: str


def glued_words(text: str) -> list[str]:
    """Runs of ``GLUE_LETTERS`` or more letters without a space, outside code and URLs."""
    if "```" in text or "~~~" in text:
        text = _FENCE.sub("", text)
    found: list[str] = []
    for token in _CANDIDATE.findall(text):
        if _NOT_PROSE.search(token):
            continue
        found.extend(_GLUE.findall(token))
    return found


def quality_report(
    parsed: ParsedDocument,
    chunks: Sequence[_Chunk],
    thresholds: QualityThresholds = QualityThresholds(),
) -> dict[str, Any]:
    """The report stored as ``Document.meta["quality"]``."""
    meta = parsed.metadata or {}
    text = parsed.text
    glued_chunks, examples = 0, []
    for chunk in chunks:
        words = glued_words(chunk.text)
        if words:
            glued_chunks += 1
            examples.extend(w for w in words[:2] if len(examples) < 5)
    chunk_count = len(chunks)
    replacement = text.count("\ufffd")
    report: dict[str, Any] = {
        "chars": len(text),
        "chunks": chunk_count,
        "glued_chunks": glued_chunks,
        "glued_chunk_share": _share(glued_chunks, chunk_count),
        "glued_examples": examples,
        "replacement_chars": replacement,
        "replacement_share": _share(replacement, len(text)),
    }
    cleanup = meta.get("pdf_cleanup") or {}
    if parsed.pages:
        report.update(_page_measures(parsed, meta, cleanup))
    if "navigation_blocks_dropped" in meta:
        report["navigation_blocks_dropped"] = meta["navigation_blocks_dropped"]
    report["warnings"] = _warnings(report, thresholds)
    return report


def _page_measures(
    parsed: ParsedDocument, meta: dict[str, Any], cleanup: dict[str, Any]
) -> dict[str, Any]:
    toc = set(cleanup.get("toc_pages") or [])
    empty = [n for n, start, end in parsed.pages if start == end and n not in toc]
    ocr_pages = list((meta.get("ocr") or {}).get("pages") or [])
    count = len(parsed.pages)
    furniture_chars = int(cleanup.get("furniture_chars") or 0)
    before = len(parsed.text) + furniture_chars + int(cleanup.get("toc_chars") or 0)
    return {
        "pages": count,
        "empty_pages": empty,
        "empty_page_share": _share(len(empty), count),
        "ocr_pages": ocr_pages,
        "ocr_page_share": _share(len(ocr_pages), count),
        "garbled_pages": list(meta.get("garbled_pages") or []),
        "furniture_lines": int(cleanup.get("furniture_lines") or 0),
        "furniture_pages": int(cleanup.get("furniture_pages") or 0),
        "furniture_share": _share(furniture_chars, before),
        "toc_pages": sorted(toc),
        "dot_leader_lines": int(cleanup.get("dot_leader_lines") or 0),
        "hyphens_joined": int(cleanup.get("hyphens_joined") or 0),
    }


def _warnings(report: dict[str, Any], limits: QualityThresholds) -> list[str]:
    out: list[str] = []
    if report["glued_chunk_share"] > limits.glued_chunk_share:
        out.append(
            f"{report['glued_chunks']} of {report['chunks']} chunks "
            f"({report['glued_chunk_share']:.1%}) hold words without spaces, e.g. "
            f"{report['glued_examples'][0][:40]!r}: the text layer lost its word spacing"
        )
    if report["replacement_share"] > limits.replacement_share:
        out.append(
            f"{report['replacement_chars']} characters could not be decoded (U+FFFD): "
            "wrong encoding or fonts without a Unicode map"
        )
    if report.get("empty_page_share", 0) > limits.empty_page_share:
        out.append(
            f"{len(report['empty_pages'])} of {report['pages']} pages have no text "
            f"(pages {_numbers(report['empty_pages'])})"
        )
    if report.get("ocr_page_share", 0) > limits.ocr_page_share:
        out.append(
            f"{len(report['ocr_pages'])} of {report['pages']} pages were read by OCR "
            f"(pages {_numbers(report['ocr_pages'])}): check their text"
        )
    if report.get("garbled_pages"):
        out.append(
            f"pages {_numbers(report['garbled_pages'])} have a garbled text layer (unmapped glyphs)"
        )
    if report.get("furniture_share", 0) > limits.furniture_share:
        out.append(
            f"{report['furniture_share']:.0%} of the page text was removed as running "
            f"headers/footers ({report['furniture_lines']} lines): check that no body text "
            "went with them"
        )
    return out


def _numbers(pages: list[int], most: int = 10) -> str:
    shown = ", ".join(str(p) for p in pages[:most])
    return shown + (f" and {len(pages) - most} more" if len(pages) > most else "")


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0
