"""What every parser shares: the result (``ParsedDocument``), the refusal (``ParseError``), the
limits (``ParseLimits``), the time budget of one file (``Deadline``) and how far the parse has got
(``Progress``).

See ``parsing.py`` for the entry point and the parser choices.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FORMATS",
    "MB",
    "Deadline",
    "ParseError",
    "ParseLimits",
    "ParsedDocument",
    "Progress",
    "ProgressCallback",
    "megabytes",
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


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()

    def check(self, where: str) -> None:
        if self.remaining() < 0:
            raise ParseError(f"parsing exceeded the time budget of {self.seconds:g} s ({where})")

    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - self.started)


#: ``(done, total)``: units (PDF pages, EPUB chapters, DOCX blocks, HTML elements) parsed so far
#: and how many there are. What it raises stops the parse and leaves ``parse_document`` as it is.
ProgressCallback = Callable[[int, int], None]


class Progress:
    """How far one file's parse has got, reported through one callback for every format.

    Each parser says what its unit is once it knows how many there are (:meth:`start`: the
    pages of a PDF, the chapters of an EPUB, the body blocks of a DOCX, the elements of an
    HTML page's main content) and counts them as it reads (:meth:`advance`), at the same points
    where it checks its :class:`Deadline`. ``parse_document`` calls :meth:`finish`, so a format
    that counts nothing (plain text, read in one go) reports 1 of 1, and one whose count was an
    estimate ends at its total. The callback is called on every change; throttling writes is
    the caller's business (the parse runner writes every few pages, see
    ``workers/documents/runner.py``). ``done`` never passes ``total``.
    """

    def __init__(self, callback: ProgressCallback | None = None) -> None:
        self.callback = callback
        self.done = 0
        self.total: int | None = None
        #: what the callback raised (a lost lease): ``parse_document`` re-raises it unchanged
        #: instead of calling it a corrupt file
        self.raised: BaseException | None = None

    def start(self, total: int) -> None:
        """The number of units this parse will read (a new start resets the count)."""
        self.total, self.done = max(1, total), 0
        self._report()

    def advance(self, units: int = 1) -> None:
        self.set(self.done + units)

    def set(self, done: int) -> None:
        """``done`` units read (an estimate's overshoot stays at the total)."""
        done = min(done, self.total) if self.total is not None else done
        if done != self.done:
            self.done = done
            self._report()

    def finish(self) -> None:
        """All read: done = total (1 of 1 where the parser counted nothing)."""
        changed = self.total is None or self.done != self.total
        if self.total is None:
            self.total = max(1, self.done)
        self.done = self.total
        if changed:
            self._report()

    def _report(self) -> None:
        if self.callback is None or self.total is None:
            return
        try:
            self.callback(self.done, self.total)
        except BaseException as exc:
            self.raised = exc
            raise


def megabytes(n: int) -> str:
    return f"{n / MB:.1f} MB"
