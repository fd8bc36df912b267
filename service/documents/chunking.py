"""Split document text into chunks with provenance (pure Python, no database).

Three strategies, chosen by ``ChunkSettings.strategy``:

- ``markdown``: sections start at headings (``ParsedDocument.headings``, or ATX ``#`` lines
  found in plain strings); small sections that share a heading ancestor are merged up to
  ``max_chars``, large ones are split recursively. Every chunk carries its heading path.
- ``recursive``: split by paragraph, then line, then sentence (``。！？；`` and ``.!?`` followed
  by whitespace), then clause, then whitespace, then a hard cut, packing pieces greedily up
  to ``max_chars``.
- ``tokens``: fixed windows of ``max_tokens`` tokens with ``overlap`` tokens shared between
  neighbours.

Every chunk's text is exactly ``document_text[char_start:char_end]`` (leading and trailing
whitespace excluded), for every strategy; with ``overlap`` the spans of neighbours overlap.

Tokenizers (``ChunkSettings.tokenizer``): ``"simple"`` (default; offline and deterministic: a
CJK character, a run of other letters/digits, or a punctuation mark is one token),
``"cl100k_base"`` or any tiktoken encoding name (tiktoken downloads the encoding file on first
use, so it only works offline when ``TIKTOKEN_CACHE_DIR`` already holds it), or
``"hf:/path"`` for a local Hugging Face tokenizer folder or ``tokenizer.json`` file (loaded
lazily with ``tokenizers``/``transformers``, never from the network).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal, Protocol

from service.documents.dedup import content_hash
from service.documents.parsing import ParsedDocument, find_markdown_headings

__all__ = [
    "ChunkOut",
    "ChunkSettings",
    "Tokenizer",
    "TokenizerError",
    "chunk_text",
    "get_tokenizer",
]

Strategy = Literal["markdown", "recursive", "tokens"]
_STRATEGIES = ("markdown", "recursive", "tokens")


@dataclass(frozen=True)
class ChunkSettings:
    """How to split a document into chunks."""

    strategy: Strategy = field(
        default="markdown",
        metadata={"help": "markdown (heading-aware), recursive (paragraph/sentence) or tokens."},
    )
    max_chars: int = field(
        default=2000,
        metadata={"help": "Longest chunk in characters (markdown and recursive strategies)."},
    )
    overlap: int = field(
        default=0,
        metadata={
            "help": "Text shared by neighbouring chunks: characters for markdown/recursive "
            "(within max_chars, never across a heading), tokens for the tokens strategy."
        },
    )
    max_tokens: int = field(
        default=512, metadata={"help": "Tokens per chunk for the tokens strategy."}
    )
    tokenizer: str = field(
        default="simple",
        metadata={"help": "simple, a tiktoken encoding name (cl100k_base), or hf:/local/path."},
    )

    def __post_init__(self) -> None:
        if self.strategy not in _STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(_STRATEGIES)}")
        if self.max_chars < 16:
            raise ValueError("max_chars must be at least 16")
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be positive")
        if self.overlap < 0:
            raise ValueError("overlap must not be negative")
        size = self.max_tokens if self.strategy == "tokens" else self.max_chars
        if self.overlap * 2 > size:
            unit = "max_tokens" if self.strategy == "tokens" else "max_chars"
            raise ValueError(f"overlap must be at most half of {unit}")
        if not self.tokenizer or (self.tokenizer.startswith("hf:") and len(self.tokenizer) < 4):
            raise ValueError("tokenizer must be 'simple', a tiktoken encoding or 'hf:<path>'")


@dataclass
class ChunkOut:
    """One chunk; ``text == document_text[char_start:char_end]``."""

    ordinal: int
    text: str
    char_start: int
    char_end: int
    page_start: int | None
    page_end: int | None
    heading_path: list[str]
    token_count: int
    content_hash: str


def chunk_text(
    source: ParsedDocument | str, settings: ChunkSettings = ChunkSettings()
) -> list[ChunkOut]:
    """Split a parsed document (or a Markdown/plain string) into ordered chunks."""
    if isinstance(source, ParsedDocument):
        text, headings, pages = source.text, source.headings, source.pages
    else:
        text, headings, pages = source, find_markdown_headings(source), []
    tokenizer = get_tokenizer(settings.tokenizer)
    outline = _Outline(headings)
    spans = _strategy_spans(text, outline, tokenizer, settings)
    page_index = _PageIndex(pages)
    chunks: list[ChunkOut] = []
    for start, end, path, count in spans:
        if end <= start:
            continue
        body = text[start:end]
        chunks.append(
            ChunkOut(
                ordinal=len(chunks),
                text=body,
                char_start=start,
                char_end=end,
                page_start=page_index.page_at(start),
                page_end=page_index.page_at(end - 1),
                heading_path=list(path if path is not None else outline.path_at(start)),
                token_count=count if count is not None else tokenizer.count(body),
                content_hash=content_hash(body),
            )
        )
    return chunks


_Span = tuple[int, int, tuple[str, ...] | None, int | None]  # start, end, path, tokens


def _strategy_spans(
    text: str, outline: _Outline, tokenizer: Tokenizer, settings: ChunkSettings
) -> list[_Span]:
    """Chunk spans; a path or token count is given when the strategy already knows it."""
    if settings.strategy == "tokens":
        windows = _token_windows(text, tokenizer, settings.max_tokens, settings.overlap)
        return [(start, end, None, count) for start, end, count in windows]
    if settings.strategy == "recursive":
        pieces = _split(text, 0, len(text), settings.max_chars - settings.overlap)
        return [(s, e, None, None) for s, e in _with_overlap(text, pieces, settings.overlap)]
    return [(s, e, path, None) for s, e, path in _markdown_spans(text, outline, settings)]


# --------------------------------------------------------------------------- provenance helpers


class _Outline:
    """Heading path (titles from the top level down) at any character offset."""

    def __init__(self, headings: list[tuple[int, str, int]]) -> None:
        self.offsets: list[int] = []
        self.paths: list[tuple[str, ...]] = []
        stack: list[tuple[int, str]] = []
        for level, title, offset in sorted(headings, key=lambda h: h[2]):
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, title))
            self.offsets.append(offset)
            self.paths.append(tuple(t for _, t in stack))

    def path_at(self, offset: int) -> tuple[str, ...]:
        i = bisect_right(self.offsets, offset) - 1
        return self.paths[i] if i >= 0 else ()


class _PageIndex:
    def __init__(self, pages: list[tuple[int, int, int]]) -> None:
        self.pages = sorted(pages, key=lambda p: p[1])
        self.starts = [p[1] for p in self.pages]

    def page_at(self, offset: int) -> int | None:
        if not self.pages:
            return None
        i = max(bisect_right(self.starts, offset) - 1, 0)
        return self.pages[i][0]


# --------------------------------------------------------------------------- recursive splitting

_SEPARATORS = (
    re.compile(r"\n[ \t]*\n\s*"),  # paragraphs
    re.compile(r"\n"),  # lines
    re.compile(r"[。！？；][”’」』）》\"']*|[.!?][\"'”’)\]]*(?=\s)"),  # sentences
    re.compile(r"[，、：,:;]"),  # clauses
    re.compile(r"\s+"),  # words
)


def _split(text: str, start: int, end: int, limit: int, level: int = 0) -> list[tuple[int, int]]:
    """Non-overlapping, whitespace-trimmed spans of at most ``limit`` chars covering the text."""
    start, end = _strip(text, start, end)
    if end - start <= limit:
        return [(start, end)] if end > start else []
    if level == len(_SEPARATORS):
        return [(s, min(s + limit, end)) for s in range(start, end, limit)]
    cuts = [m.end() for m in _SEPARATORS[level].finditer(text, start, end)]
    if not cuts:
        return _split(text, start, end, limit, level + 1)
    pieces: list[tuple[int, int]] = []
    group_start = group_end = start
    for unit_start, unit_end in zip([start, *cuts], [*cuts, end]):
        if unit_end - unit_start > limit:
            if group_end > group_start and _heading_only(text, group_start, group_end):
                # keep a heading with the start of the oversized unit that follows it
                pieces += _split(text, group_start, unit_end, limit, level + 1)
            else:
                pieces += _split(text, group_start, group_end, limit, level)
                pieces += _split(text, unit_start, unit_end, limit, level + 1)
            group_start = group_end = unit_end
        elif unit_end - group_start <= limit:
            group_end = unit_end
        else:
            pieces += _split(text, group_start, group_end, limit, level)
            group_start, group_end = unit_start, unit_end
    pieces += _split(text, group_start, group_end, limit, level)
    return pieces


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


_SNAP = re.compile(r"[\s。！？；，、.!?;,:：]")


def _with_overlap(text: str, pieces: list[tuple[int, int]], overlap: int) -> list[tuple[int, int]]:
    """Extend each piece back by up to ``overlap`` chars, starting after a word boundary."""
    if overlap <= 0 or len(pieces) < 2:
        return pieces
    out = [pieces[0]]
    for (prev_start, _), (start, end) in pairwise(pieces):
        begin = max(prev_start, start - overlap)
        if begin > prev_start and not _SNAP.match(text, begin - 1):
            boundary = _SNAP.search(text, begin, start)  # do not start mid-word
            if boundary is not None:
                begin = boundary.end()
        begin, _ = _strip(text, begin, end)
        out.append((min(begin, start), end))
    return out


# --------------------------------------------------------------------------- markdown sections


def _markdown_spans(
    text: str, outline: _Outline, settings: ChunkSettings
) -> Iterator[tuple[int, int, tuple[str, ...]]]:
    limit = settings.max_chars - settings.overlap
    for start, end, path in _merged_sections(text, outline, settings.max_chars):
        if end - start <= settings.max_chars:
            pieces = _split(text, start, end, settings.max_chars)
        else:
            pieces = _with_overlap(text, _split(text, start, end, limit), settings.overlap)
        for s, e in pieces:
            yield s, e, path


def _sections(text: str, outline: _Outline) -> list[tuple[int, int, tuple[str, ...]]]:
    bounds = [0, *outline.offsets, len(text)]
    paths = [(), *outline.paths]
    return [
        (bounds[i], bounds[i + 1], paths[i]) for i in range(len(paths)) if bounds[i + 1] > bounds[i]
    ]


def _merged_sections(
    text: str, outline: _Outline, max_chars: int
) -> list[tuple[int, int, tuple[str, ...]]]:
    """Merge neighbouring sections that fit together and share a heading ancestor."""
    merged: list[tuple[int, int, tuple[str, ...]]] = []
    for start, end, path in _sections(text, outline):
        if merged:
            m_start, m_end, m_path = merged[-1]
            common = _common_prefix(m_path, path)
            fits = end - m_start <= max_chars
            if fits and (common or _heading_only(text, m_start, m_end)):
                merged[-1] = (m_start, end, common)
                continue
        merged.append((start, end, path))
    return merged


def _common_prefix(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _heading_only(text: str, start: int, end: int) -> bool:
    lines = [line for line in text[start:end].split("\n") if line.strip()]
    return all(line.lstrip().startswith("#") for line in lines)


# --------------------------------------------------------------------------- token windows


def _token_windows(
    text: str, tokenizer: Tokenizer, max_tokens: int, overlap: int
) -> Iterator[tuple[int, int, int]]:
    """``(char_start, char_end, token_count)`` of windows of ``max_tokens`` tokens."""
    if isinstance(tokenizer, SimpleTokenizer):
        yield from tokenizer.windows(text, max_tokens, overlap)
        return
    step = max_tokens - overlap
    window: list[tuple[int, int]] = []
    emitted = False
    for span in tokenizer.spans(text):
        window.append(span)
        if len(window) == max_tokens:
            yield _window_span(text, window)
            emitted = True
            window = window[step:]
    if window and (not emitted or len(window) > overlap):
        yield _window_span(text, window)


def _window_span(text: str, window: list[tuple[int, int]]) -> tuple[int, int, int]:
    start = min(s for s, _ in window)
    end = max(e for _, e in window)
    start, end = _strip(text, start, end)
    return start, max(end, start), len(window)


# --------------------------------------------------------------------------- tokenizers


class TokenizerError(RuntimeError):
    """The configured tokenizer cannot be loaded (offline, missing path, missing package)."""


class Tokenizer(Protocol):
    name: str

    def count(self, text: str) -> int: ...

    def spans(self, text: str) -> Iterator[tuple[int, int]]: ...


_CJK = (
    "\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f"
)
_SIMPLE = rf"[{_CJK}]|[^\W{_CJK}]++|[^\w\s]"
_SIMPLE_TOKEN = re.compile(_SIMPLE)


@lru_cache(maxsize=16)
def _simple_run(count: int) -> re.Pattern[str]:
    """Exactly ``count`` simple tokens (possessive, so words are never split to make up
    the count: it tokenizes exactly like ``_SIMPLE_TOKEN``)."""
    return re.compile(rf"(?:\s*+(?:{_SIMPLE})){{{count}}}")


class SimpleTokenizer:
    """A CJK character, a run of other word characters, or one punctuation mark per token."""

    name = "simple"

    def count(self, text: str) -> int:
        return len(_SIMPLE_TOKEN.findall(text))

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        return (m.span() for m in _SIMPLE_TOKEN.finditer(text))

    def windows(self, text: str, size: int, overlap: int) -> Iterator[tuple[int, int, int]]:
        """Same windows as the generic per-token loop, but the regex engine counts tokens
        (about 4x faster): each window is ``size - overlap`` tokens plus ``overlap`` more."""
        step_run, overlap_run = _simple_run(size - overlap), _simple_run(overlap or 1)
        first = _SIMPLE_TOKEN.search(text)
        emitted = False
        while first is not None:
            start = first.start()
            step = step_run.match(text, start)
            extra = overlap_run.match(text, step.end()) if step is not None and overlap else None
            if step is None or (overlap and extra is None):  # the last, shorter window
                count = len(_SIMPLE_TOKEN.findall(text, start))
                if not emitted or count > overlap:
                    yield start, _strip(text, start, len(text))[1], count
                return
            yield start, (extra or step).end(), size
            emitted = True
            first = _SIMPLE_TOKEN.search(text, step.end())


class TiktokenTokenizer:
    def __init__(self, encoding: str) -> None:
        self.name = encoding
        try:
            import tiktoken

            self._enc = tiktoken.get_encoding(encoding)
        except Exception as exc:
            raise TokenizerError(
                f"tiktoken encoding {encoding!r} is not available ({type(exc).__name__}); "
                "offline it needs the encoding file in TIKTOKEN_CACHE_DIR, or use 'simple'"
            ) from exc

    def count(self, text: str) -> int:
        return len(self._enc.encode_ordinary(text))

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        tokens = self._enc.encode_ordinary(text)
        _, offsets = self._enc.decode_with_offsets(tokens)
        ends = [*offsets[1:], len(text)]
        return ((s, max(s, e)) for s, e in zip(offsets, ends))


class HFTokenizer:
    """A local Hugging Face tokenizer: a folder (transformers) or a tokenizer.json file."""

    def __init__(self, path: str) -> None:
        self.name = f"hf:{path}"
        target = Path(path)
        if not target.exists():
            raise TokenizerError(f"tokenizer path {path!r} does not exist")
        try:
            if target.is_file():
                from tokenizers import Tokenizer as RawTokenizer

                self._raw: Any = RawTokenizer.from_file(str(target))
                self._fast: Any = None
            else:
                from transformers import AutoTokenizer

                self._raw = None
                self._fast = AutoTokenizer.from_pretrained(str(target), local_files_only=True)
        except Exception as exc:
            raise TokenizerError(f"cannot load tokenizer {path!r}: {exc}") from exc

    def count(self, text: str) -> int:
        if self._raw is not None:
            return len(self._raw.encode(text, add_special_tokens=False).ids)
        return len(self._fast(text, add_special_tokens=False)["input_ids"])

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        if self._raw is not None:
            offsets = self._raw.encode(text, add_special_tokens=False).offsets
        else:
            encoded = self._fast(text, add_special_tokens=False, return_offsets_mapping=True)
            offsets = encoded["offset_mapping"]
        return (tuple(o) for o in offsets)  # type: ignore[misc]


@lru_cache(maxsize=8)
def get_tokenizer(spec: str = "simple") -> Tokenizer:
    """Load (once per process) the tokenizer named by ``spec``; raises ``TokenizerError``."""
    if spec == "simple":
        return SimpleTokenizer()
    if spec.startswith("hf:"):
        return HFTokenizer(spec[3:])
    return TiktokenTokenizer(spec.removeprefix("tiktoken:"))
