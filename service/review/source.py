"""The source beside a sample under review: the chunk it was drawn from, with the passages
its answers quote highlighted (escaped text, ``<mark>`` around the quotes)."""
from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape
from sqlalchemy.orm import Session

from service.models import Chunk, Document, Sample

MIN_QUOTE = 12


def _quote_spans(text: str, answers: list[str], min_len: int = MIN_QUOTE) -> list[tuple[int, int]]:
    """Spans of ``text`` covered by a substring of length >= ``min_len`` shared with an answer.

    Every character inside a common substring of at least ``min_len`` characters is covered:
    a window of ``min_len`` characters is marked when it occurs in some answer.
    """
    grams: set[str] = set()
    for answer in answers:
        for i in range(len(answer) - min_len + 1):
            grams.add(answer[i:i + min_len])
    if not grams:
        return []
    spans: list[tuple[int, int]] = []
    for i in range(len(text) - min_len + 1):
        if text[i:i + min_len] in grams:
            if spans and spans[-1][1] >= i:
                spans[-1] = (spans[-1][0], i + min_len)
            else:
                spans.append((i, i + min_len))
    return spans


def highlight_quotes(text: str, answers: list[str], min_len: int = MIN_QUOTE) -> Markup:
    """Escaped ``text`` with the passages quoted by the answers wrapped in ``<mark>``."""
    parts: list[str] = []
    pos = 0
    for start, end in _quote_spans(text, answers, min_len):
        parts.append(str(escape(text[pos:start])))
        parts.append(f'<mark class="quote">{escape(text[start:end])}</mark>')
        pos = end
    parts.append(str(escape(text[pos:])))
    return Markup("".join(parts))


def source_for(db: Session, sample: Sample) -> dict[str, Any] | None:
    """The chunk a sample was drawn from, with the quoted passages highlighted."""
    chunk = db.get(Chunk, sample.chunk_id) if sample.chunk_id else None
    doc_id = chunk.document_id if chunk else sample.document_id
    doc = db.get(Document, doc_id) if doc_id else None
    if chunk is None and doc is None:
        return None
    out: dict[str, Any] = {"filename": doc.filename if doc else None, "document_id": doc_id}
    if chunk is not None:
        text = chunk.redacted_text or chunk.text
        answers = [m["content"] for m in sample.messages if m.get("role") == "assistant"]
        out.update(chunk_id=chunk.id, ordinal=chunk.ordinal, page_start=chunk.page_start,
                   page_end=chunk.page_end, heading_path=list(chunk.heading_path or []),
                   html=highlight_quotes(text, answers))
    return out
