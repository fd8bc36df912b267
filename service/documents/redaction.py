"""Find and mask personal data in text (pure Python, no database).

``redact(text)`` replaces e-mail addresses, phone numbers, Chinese resident ID numbers, bank
card numbers, IP addresses and the ``user:password`` of URLs with typed placeholders
(``[EMAIL]``, ``[PHONE]``, ``[CN_ID]``, ``[BANK_CARD]``, ``[IP]``, ``[CREDENTIALS]``) and returns
what it replaced, with offsets into the original text.

Digit boundaries are ASCII-only (``(?<![0-9A-Za-z])``) rather than ``\\b``, because ``\\b`` treats
Chinese characters as word characters and would miss ``电话13812345678``. A number must be the
whole digit run: no digit continues it across a decimal point or a hyphen (``13800138000.5``,
``0.13812345678``, ``SO-2024-13812345678``, a ms timestamp, an 18-digit ID), and a currency
sign just before it makes it an amount (``¥13800138000``). Full-width digits are matched as
ASCII ones. Candidates that need it are validated: resident IDs by birth date and ISO 7064
checksum, card numbers by the Luhn check and an issuer prefix that exists (so ``2024...``
order numbers are not Mastercard numbers), IPs with ``ipaddress``. Addresses in URL user info
(``ftp://anonymous@host``; a ``user:password`` there is masked as ``[CREDENTIALS]``), scp-style
Git remotes (``git@github.com:org/repo``) and retina
file names (``logo@2x.png``) are not e-mail addresses; one in a URL's path or query is. A bare
11-digit number that starts 13-19 is still taken for a mobile number: without context it
cannot be told apart from an order number of that shape.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Literal

from service.documents.parsing import ParsedDocument

__all__ = [
    "PII_TYPES",
    "PLACEHOLDERS",
    "Redaction",
    "find_pii",
    "redact",
    "redact_document",
    "redacted_offset",
]

PLACEHOLDERS = {
    "EMAIL": "[EMAIL]",
    "CN_ID": "[CN_ID]",
    "BANK_CARD": "[BANK_CARD]",
    "PHONE": "[PHONE]",
    "IP": "[IP]",
    "URL_CREDENTIALS": "[CREDENTIALS]",
}
#: Detection order; on overlapping matches the earlier, then longer, then listed-first wins.
PII_TYPES = tuple(PLACEHOLDERS)


@dataclass(frozen=True)
class Redaction:
    """One replaced span: ``original == text[start:end]`` of the text given to ``redact``."""

    type: str
    start: int
    end: int
    original: str


def redact(text: str, *, types: Iterable[str] = PII_TYPES) -> tuple[str, list[Redaction]]:
    """Return ``(redacted_text, redactions)``; redactions are sorted by position."""
    found = find_pii(text, types=types)
    parts: list[str] = []
    cursor = 0
    for item in found:
        parts.append(text[cursor : item.start])
        parts.append(PLACEHOLDERS[item.type])
        cursor = item.end
    parts.append(text[cursor:])
    return "".join(parts), found


def redact_document(
    document: ParsedDocument, *, types: Iterable[str] = PII_TYPES
) -> tuple[ParsedDocument, list[Redaction]]:
    """Redact a parsed document's text and move its page and heading offsets to match.

    Chunk the returned document (not the original) when only redacted text may be stored:
    its chunks' spans then index the redacted text.
    """
    text, found = redact(document.text, types=types)
    moved = _OffsetMap(found)
    pages = [
        (number, moved.map(start), moved.map(end, side="end"))
        for number, start, end in document.pages
    ]
    headings = [(level, title, moved.map(offset)) for level, title, offset in document.headings]
    metadata = dict(document.metadata)
    cleanup = metadata.get("pdf_cleanup")
    if cleanup and cleanup.get("furniture_examples"):  # removed header lines, kept as examples
        examples = [redact(line, types=types)[0] for line in cleanup["furniture_examples"]]
        metadata["pdf_cleanup"] = {**cleanup, "furniture_examples": examples}
    redacted = dataclasses.replace(
        document, text=text, pages=pages, headings=headings, metadata=metadata
    )
    return redacted, found


def redacted_offset(
    redactions: list[Redaction], offset: int, *, side: Literal["start", "end"] = "start"
) -> int:
    """Where ``offset`` of the original text lands in the text ``redact`` returned.

    An offset inside a replaced span maps to the start of its placeholder (``side="start"``)
    or to its end (``side="end"``).
    """
    return _OffsetMap(redactions).map(offset, side=side)


class _OffsetMap:
    def __init__(self, redactions: list[Redaction]) -> None:
        self.redactions = redactions
        self.starts = [r.start for r in redactions]
        self.shift_before: list[int] = []  # length change from all earlier redactions
        shift = 0
        for r in redactions:
            self.shift_before.append(shift)
            shift += len(PLACEHOLDERS[r.type]) - (r.end - r.start)

    def map(self, offset: int, *, side: Literal["start", "end"] = "start") -> int:
        index = bisect_right(self.starts, offset) - 1
        if index < 0:
            return offset
        current = self.redactions[index]
        placeholder_start = current.start + self.shift_before[index]
        placeholder_end = placeholder_start + len(PLACEHOLDERS[current.type])
        if offset >= current.end:
            return placeholder_end + (offset - current.end)
        if offset == current.start or side == "start":
            return placeholder_start
        return placeholder_end


def find_pii(text: str, *, types: Iterable[str] = PII_TYPES) -> list[Redaction]:
    """Non-overlapping personal-data spans in ``text``, sorted by position."""
    wanted = set(types)
    unknown = wanted - set(PII_TYPES)
    if unknown:
        raise ValueError(f"unknown PII types: {', '.join(sorted(unknown))}")
    scan = text.translate(_FULLWIDTH)  # same length, so offsets hold for ``text`` too
    candidates: list[tuple[int, int, int, str]] = []
    for priority, kind in enumerate(PII_TYPES):
        if kind in wanted:
            for start, end in _DETECTORS[kind](scan):
                candidates.append((start, -(end - start), priority, kind))
    candidates.sort()
    chosen: list[Redaction] = []
    last_end = -1
    for start, neg_length, _, kind in candidates:
        end = start - neg_length
        if start >= last_end:
            chosen.append(Redaction(kind, start, end, text[start:end]))
            last_end = end
    return chosen


# --------------------------------------------------------------------------- detectors

# Full-width digits and signs (common in Chinese text) are matched as their ASCII forms.
_FULLWIDTH = str.maketrans("０１２３４５６７８９＋－．（）", "0123456789+-.()")

# A number starts and ends where the digit run does: no ASCII letter or digit next to it, no
# digit across a decimal point or hyphen (13800138000.5, 0.13812345678, SO-2024-13812345678),
# and no currency sign just before it (¥13800138000 is an amount).
_L = r"(?<![0-9A-Za-z])(?<![0-9][.-])(?<![¥￥$€£])(?<![¥￥$€£] )"
_R = r"(?![0-9A-Za-z])(?![.-][0-9])"
_PHONE_L = r"(?<![0-9A-Za-z+])(?<![0-9][.-])(?<![¥￥$€£])(?<![¥￥$€£] )"

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)
_URL_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@]*$")
_RETINA_FILE = re.compile(r"@[0-9]+(?:\.[0-9]+)?x\.[A-Za-z]+$")  # icon@2x.png


def _emails(text: str) -> Iterator[tuple[int, int]]:
    for m in _EMAIL.finditer(text):
        start, end = m.span()
        while text[start] == ".":  # a sentence full stop glued to the address
            start += 1
        if not _not_an_address(text, start, end):
            yield start, end


def _not_an_address(text: str, start: int, end: int) -> bool:
    """URL user info (``ftp://anonymous@ftp.example.org``, ``https://user:pw@host``), an
    scp-style Git remote (``git@github.com:org/repo.git``) or a retina image file name
    (``logo@2x.png``). An address in a URL's path or query (``?to=bob@example.com``) is
    still an address."""
    if _URL_AUTHORITY.search(text[max(start - 256, 0) : start]):
        return True
    if text.startswith(":", end) and end + 1 < len(text) and text[end + 1] in "/~" + _WORDISH:
        return True
    return bool(_RETINA_FILE.search(text, start, end))


_WORDISH = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-."


_CN_ID = re.compile(
    _L + r"[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
    r"[0-9]{3}[0-9Xx]" + _R
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def _cn_ids(text: str) -> Iterator[tuple[int, int]]:
    for m in _CN_ID.finditer(text):
        if _valid_cn_id(m.group()):
            yield m.span()


def _valid_cn_id(value: str) -> bool:
    """18-character PRC resident ID: real birth date and ISO 7064 MOD 11-2 check character."""
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    total = sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == value[17].upper()


# 13-19 digits, optionally in groups separated by single spaces or hyphens.
_CARD = re.compile(_L + r"[2-6][0-9]{3}(?:[ -]?[0-9]{2,6}){2,4}" + _R)


def _bank_cards(text: str) -> Iterator[tuple[int, int]]:
    for m in _CARD.finditer(text):
        length = _card_length(m.group()) if _CARD_ISSUER.match(m.group()) else 0
        if length:
            yield m.start(), m.start() + length


# Issuer prefixes that exist: Mastercard 2221-2720 (so "2024..." order numbers are not cards),
# Amex/Diners/JCB 30 and 34-38, Visa 4, Mastercard/Maestro 5, UnionPay/Discover/Maestro 6.
_CARD_ISSUER = re.compile(r"2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)|3[04-8]|[456]")


def _card_length(raw: str) -> int:
    """Length of the longest leading run of groups that is a valid card number, else 0.

    Trailing groups are dropped one by one so that ``6222 0212 3456 7890 2024`` (a card
    followed by a year) still finds the card.
    """
    separators = {c for c in raw if c in " -"}
    if len(separators) > 1:
        return 0
    if not separators:
        return len(raw) if 13 <= len(raw) <= 19 and _luhn(raw) else 0
    sep = separators.pop()
    groups = raw.split(sep)
    for count in range(len(groups), 2, -1):
        digits = "".join(groups[:count])
        if 13 <= len(digits) <= 19 and _luhn(digits):
            return len(sep.join(groups[:count]))
    return 0


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_MOBILE_SEP = re.compile(r"1[3-9][0-9]([ -])")

_PHONES = (
    # Chinese mobile, optionally +86 / 0086 / (+86) / "86 ", optionally grouped 3-4-4.
    re.compile(
        _PHONE_L
        + r"(?:(?:\+|00)86[ -]?|86[ -]|\(\+?86\)[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}"
        + _R
    ),
    # Chinese landline with area code and optional extension: 010-12345678, (0755) 8888 6666.
    re.compile(
        _PHONE_L + r"(?:0[0-9]{2,3}-|\(0[0-9]{2,3}\) ?)[2-9][0-9]{2,3}[ -]?[0-9]{4}"
        r"(?:-[0-9]{1,5})?" + _R
    ),
    # International: + country code and 6-14 more digits in groups.
    re.compile(r"(?<![0-9A-Za-z+])\+[1-9][0-9]{0,2}(?:[ -]?\(?[0-9]{1,4}\)?){2,5}" + _R),
    # North American: (415) 555-2671, 415-555-2671, 415.555.2671, +1 415 555 2671.
    re.compile(
        _PHONE_L + r"(?:\+?1[ .-]?)?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .-])[2-9][0-9]{2}"
        r"[ .-][0-9]{4}" + _R
    ),
)


def _phones(text: str) -> Iterator[tuple[int, int]]:
    for index, pattern in enumerate(_PHONES):
        for m in pattern.finditer(text):
            digits = sum(c.isdigit() for c in m.group())
            if 7 <= digits <= 15 and not (index == 0 and _longer_grouped_run(text, *m.span())):
                yield m.span()


def _longer_grouped_run(text: str, start: int, end: int) -> bool:
    """``138 1234 5678 9012``: the 3-4-4 groups go on with the same separator, so they are
    part of a longer grouped number, not a mobile number."""
    grouped = _MOBILE_SEP.search(text, start, end)
    if grouped is None:
        return False
    sep = grouped.group(1)
    after = text[end : end + 2]
    before = text[max(start - 2, 0) : start] if grouped.start() == start else ""
    return (after[:1] == sep and after[1:].isdigit()) or (
        before[1:] == sep and before[:1].isdigit()
    )


_IPV4 = re.compile(
    r"(?<![0-9A-Za-z.])(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?![0-9A-Za-z]|\.[0-9])"
)
_IPV6_CANDIDATE = re.compile(
    r"(?<![0-9A-Za-z:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f.]{0,15}){2,8}(?![0-9A-Za-z:])"
)


def _ips(text: str) -> Iterator[tuple[int, int]]:
    for m in _IPV4.finditer(text):
        yield m.span()
    for m in _IPV6_CANDIDATE.finditer(text):
        value = m.group().rstrip(".")  # a full stop after the address
        if _plausible_ipv6(value):
            yield m.start(), m.start() + len(value)


def _plausible_ipv6(value: str) -> bool:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    groups = [g for g in value.split(":") if g]
    # "::" and "a::b" are valid addresses but far more often C++ scopes or typos.
    return bool(groups) and any(len(g) >= 2 for g in groups)


# user:password in a URL's authority (https://deploy:s3cret@db.example.com): the pair is masked,
# the scheme and host stay; a user alone (ftp://anonymous@host) is not a secret
_URL_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^\s/?#@:]+:[^\s/?#@]+)@[^\s/?#@]")


def _url_credentials(text: str) -> Iterator[tuple[int, int]]:
    for m in _URL_USERINFO.finditer(text):
        yield m.span(1)


_DETECTORS: dict[str, Callable[[str], Iterator[tuple[int, int]]]] = {
    "EMAIL": _emails,
    "CN_ID": _cn_ids,
    "BANK_CARD": _bank_cards,
    "PHONE": _phones,
    "IP": _ips,
    "URL_CREDENTIALS": _url_credentials,
}
