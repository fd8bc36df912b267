"""Plain text and Markdown files, and the Markdown-flavoured text every parser writes.

Decoding: UTF-8 (BOM honoured), then GB18030 if the result is plausible Chinese, then cp1252
if it looks like Western European text, then ``charset-normalizer``. Markdown headings are
ATX ``#`` lines outside fenced code blocks (``find_markdown_headings``, also used by the
chunker). ``TextBuilder`` and ``markdown_table`` assemble the output of the other parsers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from service.documents.parse_types import Deadline, ParsedDocument, ParseLimits, Progress

__all__ = [
    "TextBuilder",
    "clean",
    "decode_text",
    "find_markdown_headings",
    "markdown_table",
    "parse_markdown",
    "parse_text",
]

# --------------------------------------------------------------------------- text assembly


class TextBuilder:
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


def clean(text: str) -> str:
    """Normalise newlines and drop NULs (PostgreSQL text cannot hold them)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text


def markdown_table(rows: list[list[str]]) -> str:
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
    return clean(text), encoding


# --------------------------------------------------------------------------- plain text, Markdown


def parse_text(
    path: Path, limits: ParseLimits, deadline: Deadline, progress: Progress
) -> ParsedDocument:
    text, encoding = _read_text_file(path)
    return ParsedDocument(text=text, format="text", metadata={"encoding": encoding})


def parse_markdown(
    path: Path, limits: ParseLimits, deadline: Deadline, progress: Progress
) -> ParsedDocument:
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
