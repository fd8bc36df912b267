"""What every parser shares: the result (``ParsedDocument``), the refusal (``ParseError``), the
limits (``ParseLimits``) and the time budget of one file (``Deadline``).

See ``parsing.py`` for the entry point and the parser choices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FORMATS",
    "MB",
    "Deadline",
    "ParseError",
    "ParseLimits",
    "ParsedDocument",
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


def megabytes(n: int) -> str:
    return f"{n / MB:.1f} MB"
