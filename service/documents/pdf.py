"""PDF text: PDFium page extraction and the clean-up that makes typeset pages read as text.

Pure Python on top of ``pypdfium2`` (Apache-2.0/BSD; its wheels bundle PDFium, no system
packages); ``parsing._parse_pdf`` drives it and falls back to ``pypdf`` where PDFium cannot
open a file. Nothing here knows about the database.

Why PDFium: it places word spaces from glyph positions, as a viewer does, so PDFs whose words
are positioned one by one (TeX/dblatex output, most manuals) come out with their spaces; pypdf's
``extract_text`` glued the words of 93% of the chunks of a real 261-page manual. PDFium returns
the text in content-stream order, which for one- and two-column books is reading order;
pages whose stream order is not reading order (rare: some slide decks and forms) keep it.

Clean-up, in this order, on the list of page texts (page boundaries never move, so page
provenance stays exact):

1. ``normalize_page``: newlines, NULs, ligatures (``ﬁ`` -> ``fi``; only the Latin
   presentation forms, not a full NFKC that would rewrite full-width Chinese punctuation),
   PDFium's end-of-line hyphen marker (U+FFFE, or U+0002) and trailing spaces.
2. ``join_hyphenation``: ``exam-`` at a line end + ``ple`` -> ``example``. A hyphen is kept
   (``well-known``) when the hyphenated form occurs elsewhere in the document and the joined
   one does not, when the next part starts with a capital or a digit, when either part is a
   single letter, or when the first part is a prefix that English writes with a hyphen
   (``non-``, ``self-``, ``well-``...). Otherwise the word is joined: line-end hyphens in
   typeset text are mostly the typesetter's.
3. ``strip_furniture``: running headers and footers. A line within the first or last three
   lines of a page is compared with the same zone of the other pages after normalising it
   (lower case, digit runs and Roman numerals -> ``#``, punctuation dropped), so
   ``Debian Reference 13 / 233`` and ``Debian Reference ii`` are one line. It is furniture
   when it recurs on at least half the pages, or when it is a bare page number (``12``,
   ``- 12 -``, ``12 / 233``, ``Page 3 of 9``) on three pages or more, or when it recurs on
   three pages or more *on neighbouring pages* (chapter running heads: most occurrences have
   another within two pages; a ``Chapter 2`` heading at the top of each chapter does not).
   Only lines at the edge are removed (from the top down and the bottom up, stopping at the
   first line that is not furniture). Documents under three pages are left alone.
4. ``drop_toc``: table-of-contents pages (most lines are entries ending in a page number
   after dot leaders) are emptied, and dot-leader lines on other pages are removed.
5. Chinese line wraps: a line that ends with a CJK character, fills the page width and is
   followed by a line that starts with one is joined to it without a space (TeX breaks
   Chinese lines anywhere, even inside a word).

What was removed is counted in ``metadata["pdf_cleanup"]`` and reported by ``quality.py``.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

__all__ = [
    "Cleanup",
    "PdfiumDocument",
    "PdfiumPasswordError",
    "clean_pages",
    "join_hyphenation",
    "looks_garbled",
    "normalize_page",
    "strip_furniture",
]

# --------------------------------------------------------------------------- PDFium access


class PdfiumPasswordError(Exception):
    """PDFium needs a password to open the file."""


class PdfiumDocument:
    """One PDF opened with PDFium (empty user password tried), read page by page.

    pdfium is not thread-safe: callers in several threads share ``ocr.PDFIUM_LOCK``.
    """

    def __init__(self, path: Path) -> None:
        import pypdfium2
        import pypdfium2.raw as pdfium_c

        self._c = pdfium_c
        try:
            self.pdf = pypdfium2.PdfDocument(str(path))
        except pypdfium2.PdfiumError as exc:
            if getattr(exc, "err_code", None) == pdfium_c.FPDF_ERR_PASSWORD:
                raise PdfiumPasswordError(str(exc)) from exc
            raise

    def __len__(self) -> int:
        return len(self.pdf)

    def page_text(self, index: int) -> str:
        page = self.pdf[index]
        try:
            textpage = page.get_textpage()
            try:
                return textpage.get_text_range()
            finally:
                textpage.close()
        finally:
            page.close()

    def page_has_images(self, index: int) -> bool:
        page = self.pdf[index]
        try:
            images = page.get_objects(filter=(self._c.FPDF_PAGEOBJ_IMAGE,), max_depth=4)
            return next(iter(images), None) is not None
        except Exception:  # noqa: BLE001 - a damaged page: nothing to OCR that we can find
            return False
        finally:
            page.close()

    def metadata(self) -> dict[str, str]:
        try:
            info = self.pdf.get_metadata_dict(skip_empty=True)
        except Exception:  # noqa: BLE001 - metadata is optional
            return {}
        out = {}
        for key, name in (("title", "Title"), ("author", "Author"), ("producer", "Producer")):
            value = " ".join(str(info.get(name, "")).split())
            if value:
                out[key] = value
        return out

    def outline(self) -> Iterator[tuple[int, str, int]]:
        """``(level, title, page_index)`` of each bookmark that points to a page (level 1+)."""
        try:
            for bookmark in self.pdf.get_toc(max_depth=6):
                dest = bookmark.get_dest()
                index = dest.get_index() if dest is not None else None
                title = " ".join((bookmark.get_title() or "").split())
                if title and index is not None:
                    yield bookmark.level + 1, title, index
        except Exception:  # noqa: BLE001 - bookmarks are optional; damaged outlines are common
            return

    def close(self) -> None:
        self.pdf.close()


# --------------------------------------------------------------------------- page text

_REPLACEMENTS = {
    "\ufb00": "ff",
    "\ufb01": "fi",
    "\ufb02": "fl",
    "\ufb03": "ffi",
    "\ufb04": "ffl",
    "\ufb05": "st",
    "\ufb06": "st",
    "\u00a0": " ",
    "\x00": "",
    "\r": "\n",
    "\x02\n": "\ufffe",
    "\x02": "\ufffe",
}
_ODD = re.compile("\x02\n?|[\ufb00-\ufb06\u00a0\x00\r]")
_SOFT_BREAK = "\ufffe"  # PDFium: a hyphen at a line end, the line break already removed
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)


def normalize_page(text: str) -> str:
    """Raw PDFium (or pypdf) page text -> ``\\n`` lines, ligatures and markers resolved.

    Each step runs only when a cheap test finds its characters (this is per page, at
    hundreds of pages a second)."""
    text = text.replace("\r\n", "\n")
    if _ODD.search(text):
        text = _ODD.sub(lambda m: _REPLACEMENTS[m.group()], text)
    if " \n" in text or "\t\n" in text or text.endswith((" ", "\t")):
        text = _TRAILING_SPACE.sub("", text)
    return text.strip("\n")


_CONTROL_OR_PRIVATE = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\ufffd\ue000-\uf8ff]")


def looks_garbled(text: str) -> bool:
    """A text layer that is mostly replacement, control or private-use characters (fonts
    without a Unicode map): worth reading the page image instead."""
    visible = len(text) - text.count(" ") - text.count("\n")
    if visible < 16:
        return False
    return len(_CONTROL_OR_PRIVATE.findall(text)) > 0.3 * visible


# --------------------------------------------------------------------------- hyphenation

_BREAK = re.compile(f"(-\n[ \t]*|{_SOFT_BREAK})")
_WORD_START = re.compile(r"\w+")
# prefixes that English writes with a hyphen before a lower-case word
_HYPHEN_PREFIXES = frozenset(
    ("non", "self", "well", "ill", "all", "ex", "half", "cross", "quasi", "semi", "anti")
    + ("pre", "post", "co", "multi")
)
_FIND_LIMIT = 200  # candidates looked up with str.find; more build a vocabulary set
_WORDS = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")


class _Vocabulary:
    """Is a word (lower case) in the document? ``str.find`` for a few words, a set for many."""

    def __init__(self, text: str, candidates: int) -> None:
        self.text = text
        self.words: set[str] | None = None
        if candidates > _FIND_LIMIT:
            self.words = set(_WORDS.findall(text))

    def __contains__(self, word: str) -> bool:
        if self.words is not None:
            return word in self.words
        text, start = self.text, 0
        while (at := text.find(word, start)) >= 0:
            end = at + len(word)
            before = text[at - 1] if at else " "
            after = text[end] if end < len(text) else " "
            if not (before.isalnum() or before == "-") and not (after.isalnum() or after == "-"):
                return True
            start = end
        return False


def join_hyphenation(pages: list[str]) -> tuple[list[str], int]:
    """Join words hyphenated at line ends across all ``pages``; returns the pages and how
    many breaks were joined (hyphen removed)."""
    found = [len(_BREAK.findall(p)) if ("-\n" in p or _SOFT_BREAK in p) else 0 for p in pages]
    if not any(found):
        return pages, 0
    vocabulary = _Vocabulary("\n".join(pages).lower().replace(_SOFT_BREAK, "- "), sum(found))
    joined = 0
    out: list[str] = []
    for page, breaks in zip(pages, found):
        if not breaks:
            out.append(page)
            continue
        parts = _BREAK.split(page)  # text, break, text, break, ..., text
        text = [parts[0]]
        for sep, part in zip(parts[1::2], parts[2::2]):
            left = _trailing_word(text[-1])
            right_match = _WORD_START.match(part)
            right = right_match.group() if right_match else ""
            if not left or not right:  # not a word broken at the line end
                glue = "-" if sep == _SOFT_BREAK else sep
            else:
                glue = _hyphen_glue(left, right, part[len(right) : len(right) + 1], vocabulary)
                joined += glue == ""
            text.append(glue + part)
        out.append("".join(text))
    return out, joined


def _trailing_word(text: str) -> str:
    """The letters that end ``text`` (empty when it ends in anything else)."""
    start = len(text)
    while start > 0 and text[start - 1].isalpha():
        start -= 1
    if start > 0 and (text[start - 1].isalnum() or text[start - 1] in "-_"):
        return ""  # part of a longer token (``x86-``, ``foo-bar-``): not a hyphenated word
    return text[start:]


def _hyphen_glue(left: str, right: str, after: str, vocabulary: _Vocabulary) -> str:
    """``""`` to join ``left`` and ``right`` into one word, ``"-"`` to keep the hyphen."""
    if not right.isalpha() or right[0].isupper() or after.isdigit():
        return "-"
    whole, hyphened = (left + right).lower(), f"{left}-{right}".lower()
    if len(left) == 1 or len(right) == 1:
        return "-"
    if whole in vocabulary:
        return ""
    if hyphened in vocabulary or left.lower() in _HYPHEN_PREFIXES:
        return "-"
    return ""


# --------------------------------------------------------------------------- furniture

_EDGE = 3  # lines at the top and at the bottom of a page that may be furniture
_DIGITS = re.compile(r"\d+")
_ROMAN = re.compile(
    r"(?<![\w])(?=[ivxlc])c{0,3}(?:x[cl]|l?x{0,3})(?:i[xv]|v?i{0,3})(?![\w])", re.IGNORECASE
)
_NOT_WORD = re.compile(r"[^\w#]+")
_HASHES = re.compile(r"#(?:\s*#)+")
_PAGE_NUMBER_ONLY = re.compile(r"^(?:(?:page|p|seite|第|页)\s*)?#(?:\s*(?:of|/|页)\s*#)?\s*页?$")


def furniture_key(line: str) -> str:
    """The form of a line that running headers share from page to page."""
    key = _DIGITS.sub("#", line.lower())
    key = _ROMAN.sub("#", key)
    key = _NOT_WORD.sub(" ", key)
    key = _HASHES.sub("#", key)
    return " ".join(key.split())


@dataclass
class Cleanup:
    """What the clean-up removed or joined, for ``metadata["pdf_cleanup"]``."""

    furniture_lines: int = 0
    furniture_chars: int = 0
    furniture_pages: list[int] = field(default_factory=list)
    furniture_examples: list[str] = field(default_factory=list)
    toc_pages: list[int] = field(default_factory=list)
    toc_chars: int = 0
    dot_leader_lines: int = 0
    hyphens_joined: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "furniture_lines": self.furniture_lines,
            "furniture_chars": self.furniture_chars,
            "furniture_pages": len(self.furniture_pages),
            "furniture_examples": self.furniture_examples,
            "toc_pages": self.toc_pages,
            "toc_chars": self.toc_chars,
            "dot_leader_lines": self.dot_leader_lines,
            "hyphens_joined": self.hyphens_joined,
        }


def strip_furniture(pages: list[str], report: Cleanup) -> list[str]:
    """Remove running headers/footers (see the module docstring) from ``pages``."""
    count = len(pages)
    if count < 3:
        return pages
    split = [page.split("\n") for page in pages]
    seen: dict[str, list[int]] = defaultdict(list)
    for number, lines in enumerate(split):
        edge = lines[:_EDGE] + lines[max(_EDGE, len(lines) - _EDGE) :]
        for key in {furniture_key(line) for line in edge if line.strip()}:
            seen[key].append(number)
    furniture = {key for key, where in seen.items() if _is_furniture(key, where, count)}
    if not furniture:
        return pages
    out: list[str] = []
    for number, lines in enumerate(split):
        top = 0
        while top < min(_EDGE, len(lines)) and _removable(lines[top], furniture):
            top += 1
        bottom = len(lines)
        while bottom > max(top, len(lines) - _EDGE) and _removable(lines[bottom - 1], furniture):
            bottom -= 1
        removed = [line for line in lines[:top] + lines[bottom:] if line.strip()]
        if removed:
            report.furniture_lines += len(removed)
            report.furniture_chars += sum(len(line) + 1 for line in removed)
            report.furniture_pages.append(number + 1)
            for line in removed:
                if len(report.furniture_examples) < 5 and line not in report.furniture_examples:
                    report.furniture_examples.append(line.strip())
        out.append("\n".join(lines[top:bottom]).strip("\n"))
    return out


def _removable(line: str, furniture: set[str]) -> bool:
    return not line.strip() or furniture_key(line) in furniture


def _is_furniture(key: str, pages: list[int], count: int) -> bool:
    if len(pages) < 3 or not key:
        return False
    if len(pages) >= max(3, math.ceil(count / 2)):
        return True
    if _PAGE_NUMBER_ONLY.match(key):
        return True
    near = sum(1 for a, b in pairwise(pages) if b - a <= 2)
    return near >= 0.6 * len(pages)


# --------------------------------------------------------------------------- table of contents

_DOT_LEADER = re.compile(r"(?:\.\s?){4,}\s*(?:\d+|[ivxlc]+)\s*$|…{2,}\s*\d+\s*$", re.IGNORECASE)
_TOC_ENTRY = re.compile(r"^\s*(?:[\dA-Z]+(?:\.\d+)*\.?\s+)?\S.{0,120}?\s(?:\d+|[ivxlc]+)\s*$")


def drop_toc(pages: list[str], report: Cleanup) -> list[str]:
    """Empty table-of-contents pages and remove dot-leader lines elsewhere."""
    out: list[str] = []
    for number, page in enumerate(pages, start=1):
        if "..." not in page and ". ." not in page and "…" not in page:
            out.append(page)
            continue
        lines = page.split("\n")
        leaders = [bool(_DOT_LEADER.search(line)) for line in lines]
        filled = [line for line in lines if line.strip()]
        entries = sum(1 for line, dots in zip(lines, leaders) if dots or _TOC_ENTRY.match(line))
        if sum(leaders) >= 3 and entries >= 0.6 * len(filled):
            report.toc_pages.append(number)
            report.toc_chars += len(page)
            out.append("")
            continue
        kept = [line for line, dots in zip(lines, leaders) if not dots]
        report.dot_leader_lines += len(lines) - len(kept)
        out.append("\n".join(kept))
    return out


# --------------------------------------------------------------------------- Chinese line wraps

_CJK_CHARS = "\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_HAS_CJK = re.compile(f"[{_CJK_CHARS}]")
_WIDE = re.compile(f"[{_CJK_CHARS}]")
_IDEOGRAPH = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def join_cjk_wraps(page: str) -> str:
    """Join a full-width line that ends in a CJK character to the next one starting in one."""
    if not _HAS_CJK.search(page):
        return page
    lines = page.split("\n")
    widths = [len(line) + len(_WIDE.findall(line)) for line in lines]
    # the width of a full line of body text: a high quantile, not the maximum, which one long
    # URL or code line sets far beyond the text column (then no wrap would ever be joined)
    filled = sorted(w for w in widths if w)
    if not filled:
        return page
    full = 0.85 * filled[min(len(filled) - 1, int(0.8 * len(filled)))]
    out = [lines[0]]
    for i in range(1, len(lines)):
        glue = _wrap_glue(lines[i - 1], lines[i]) if widths[i - 1] >= full else None
        if glue is None:
            out.append(lines[i])
        else:
            out[-1] += glue + lines[i]
    return "\n".join(out)


def _wrap_glue(previous: str, line: str) -> str | None:
    """How a wrapped full line joins the next: nothing between two CJK characters, a space
    between a CJK character and a Latin letter or digit (as the text sets them inside a line);
    ``None`` where the break is not a wrap this can tell (list bullets, punctuation)."""
    if not previous or not line:
        return None
    left, right = _WIDE.match(previous[-1]) is not None, _WIDE.match(line[0]) is not None
    if left and right:
        return ""
    # a Latin word wrapped after an ideograph (never after CJK punctuation: "。" then "1.3 …"
    # is a sentence's end before a numbered heading)
    if (_IDEOGRAPH.match(previous[-1]) and line[0].isascii() and line[0].isalnum()) or (
            _IDEOGRAPH.match(line[0]) and previous[-1].isascii() and previous[-1].isalnum()):
        return " "
    return None


# --------------------------------------------------------------------------- headings

# what a bookmark's title and its line in the text may differ by: spacing, the dots and dashes
# of section numbers ("1.3." against "1.3"), full-width punctuation
_SQUEEZE = re.compile(r"[\s.\-_:·．。：、–—]+")
_TITLE_LEAD = 16  # a heading line may start with its section number before the title


def place_headings(text: str, pages: list[tuple[int, int, int]],
                   outline: list[tuple[int, str, int]]) -> list[tuple[int, str, int]]:
    """Bookmarks ``(level, title, page_index)`` -> headings ``(level, title, offset)``.

    The offset is where the title's line starts on the page the bookmark points to, searched
    in outline order after the previous heading found on that page, so two sections that start
    on one page each begin at their own line; a title the page does not show (a bookmark to a
    figure, a retitled entry) keeps the page's start.
    """
    headings: list[tuple[int, str, int]] = []
    squeezed: dict[int, tuple[str, list[int]]] = {}
    after: dict[int, int] = {}
    for level, title, index in outline:
        if not 0 <= index < len(pages):
            continue
        start = pages[index][1]
        if index not in squeezed:
            squeezed[index] = _squeeze(text, start, pages[index][2])
        offset = _find_title(text, squeezed[index], title, after.get(index, 0))
        if offset is None:
            offset = start
        else:
            after[index] = offset[1]
            offset = offset[0]
        headings.append((min(level, 6), title, offset))
    headings.sort(key=lambda h: h[2])  # stable: unplaced titles keep their outline order
    return headings


def _squeeze(text: str, start: int, end: int) -> tuple[str, list[int]]:
    """``text[start:end]`` without spacing and number punctuation, and each kept char's offset."""
    kept: list[str] = []
    offsets: list[int] = []
    position = start
    for match in _SQUEEZE.finditer(text, start, end):
        kept.append(text[position:match.start()])
        offsets.extend(range(position, match.start()))
        position = match.end()
    kept.append(text[position:end])
    offsets.extend(range(position, end))
    return "".join(kept).casefold(), offsets


def _find_title(text: str, page: tuple[str, list[int]], title: str,
                after: int) -> tuple[int, int] | None:
    """(line start, search position for the next title) of ``title`` at the head of a line."""
    squeezed, offsets = page
    needle = _SQUEEZE.sub("", title).casefold()
    if len(needle) < 2:
        return None
    found = squeezed.find(needle, after)
    while found >= 0:
        at = offsets[found]
        line_start = text.rfind("\n", 0, at) + 1
        if at - line_start <= _TITLE_LEAD:
            return max(line_start, offsets[0]), found + len(needle)
        found = squeezed.find(needle, found + 1)
    return None


# --------------------------------------------------------------------------- the pipeline


def clean_pages(pages: list[str]) -> tuple[list[str], Cleanup]:
    """Normalised page texts -> cleaned page texts (same count) and what was removed."""
    report = Cleanup()
    pages, report.hyphens_joined = join_hyphenation(pages)
    pages = strip_furniture(pages, report)
    pages = drop_toc(pages, report)
    pages = [join_cjk_wraps(page) for page in pages]
    return pages, report
