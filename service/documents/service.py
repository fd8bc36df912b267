"""Documents in the database: upload (streamed, deduplicated by sha256), parse and chunk as a
task, re-chunk, preview, near-duplicate marking, delete. Pure parsing/chunking lives in
``parsing.py``/``chunking.py``; this module only adapts them to the models."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from service.core import jobs, storage
from service.core.config import get_settings
from service.core.db import utcnow
from service.core.errors import Conflict, Invalid, NotFound
from service.core.pagination import paginate
from service.documents import chunking, dedup, parsing, quality, redaction
from service.documents.jobs import PARSE
from service.models import Chunk, Document, Project, Sample

log = logging.getLogger(__name__)
BATCH = 500


# -- settings ----------------------------------------------------------------------------------

def chunk_settings(project: Project | None, override: dict[str, Any] | None = None
                   ) -> chunking.ChunkSettings:
    base = dict(((project.settings or {}).get("chunking") or {}) if project else {})
    base.update({k: v for k, v in (override or {}).items() if v is not None})
    fields = {f.name for f in dataclasses.fields(chunking.ChunkSettings)}
    unknown = set(base) - fields
    if unknown:
        raise Invalid(f"unknown chunking setting(s): {', '.join(sorted(unknown))}",
                      details=[{"field": f"body.{k}", "message": "unknown setting"} for k in sorted(unknown)])
    try:
        return chunking.ChunkSettings(**base)
    except (TypeError, ValueError) as exc:
        raise Invalid(f"invalid chunking settings: {exc}",
                      details=[{"field": "body", "message": str(exc)}]) from exc


def redaction_settings(project: Project) -> dict[str, Any]:
    cfg = (project.settings or {}).get("redaction") or {}
    return {"enabled": bool(cfg.get("enabled", False)),
            "keep_original": bool(cfg.get("keep_original", False)),
            "types": cfg.get("types") or list(redaction.PII_TYPES)}


# -- upload ------------------------------------------------------------------------------------

def upload_document(db: Session, *, project_id: int, filename: str, content_type: str | None,
                    stream: BinaryIO, actor_id: int | None) -> dict[str, Any]:
    """Store one uploaded file. Returns a per-file result; raises TooLarge over the limit."""
    stored = storage.store_stream(stream, area_name=f"documents/{project_id}",
                                  max_bytes=get_settings().max_upload_bytes,
                                  suffix=Path(filename).suffix.lower()[:12])
    existing = db.scalar(select(Document).where(Document.project_id == project_id,
                                                Document.sha256 == stored.sha256))
    if existing is not None:
        stored.path.unlink(missing_ok=True)
        return {"filename": filename, "status_code": 200, "document_id": existing.id,
                "duplicate": True, "sha256": stored.sha256, "status": existing.status}
    doc = Document(project_id=project_id, filename=(filename or "upload")[:500],
                   content_type=(content_type or "")[:200], size_bytes=stored.size,
                   sha256=stored.sha256, storage_path=str(stored.path), status="uploaded",
                   created_by_id=actor_id, meta={})
    db.add(doc)
    db.flush()
    jobs.enqueue(db, PARSE, doc)
    return {"filename": filename, "status_code": 201, "document_id": doc.id, "duplicate": False,
            "sha256": stored.sha256, "status": doc.status}


def get_document(db: Session, *, project_id: int, document_id: int) -> Document:
    doc = db.get(Document, document_id)
    if doc is None or doc.project_id != project_id:
        raise NotFound("document not found", code="document_not_found")
    return doc


def list_documents(db: Session, *, project_id: int, status: str | None, limit: int,
                   cursor: str | None) -> tuple[list[Document], str | None]:
    stmt = select(Document).where(Document.project_id == project_id)
    if status:
        stmt = stmt.where(Document.status == status)
    return paginate(db, stmt, Document.id, limit=limit, cursor=cursor, descending=True)


def list_chunks(db: Session, *, project_id: int, document_id: int, limit: int,
                cursor: str | None) -> tuple[list[Chunk], str | None]:
    get_document(db, project_id=project_id, document_id=document_id)
    stmt = select(Chunk).where(Chunk.document_id == document_id)
    return paginate(db, stmt, Chunk.id, limit=limit, cursor=cursor)


# -- parsing and chunking (runs in the ingest worker) -----------------------------------------

def _parsed_from_document(doc: Document) -> parsing.ParsedDocument:
    meta = doc.meta or {}
    return parsing.ParsedDocument(
        text=doc.text or "", format=doc.format or "text",
        pages=[tuple(p) for p in meta.get("pages", [])],
        headings=[tuple(h) for h in meta.get("headings", [])],
        metadata=meta.get("parsed", {}),
    )


def _write_chunks(db: Session, doc: Document, project: Project, parsed: parsing.ParsedDocument,
                  settings: chunking.ChunkSettings) -> int:
    red = redaction_settings(project)
    pieces = chunking.chunk_text(parsed, settings)
    known: dict[str, int] = {}
    hashes = {p.content_hash for p in pieces}
    for chunk_id, h in db.execute(select(Chunk.id, Chunk.content_hash).where(
            Chunk.project_id == project.id, Chunk.document_id != doc.id,
            Chunk.content_hash.in_(hashes)).order_by(Chunk.id)):
        known.setdefault(h, chunk_id)
    rows: list[Chunk] = []
    for piece in pieces:
        redacted = None
        text = piece.text
        if red["enabled"]:
            redacted, _spans = redaction.redact(piece.text, types=red["types"])
            if not red["keep_original"]:
                text = redacted
        chunk = Chunk(project_id=project.id, document_id=doc.id, ordinal=piece.ordinal, text=text,
                      redacted_text=redacted, char_start=piece.char_start, char_end=piece.char_end,
                      page_start=piece.page_start, page_end=piece.page_end,
                      heading_path=piece.heading_path, token_count=piece.token_count,
                      content_hash=piece.content_hash)
        first = known.get(piece.content_hash)
        if first is not None:
            chunk.duplicate_of_id, chunk.duplicate_kind = first, "exact"
        rows.append(chunk)
        if len(rows) >= BATCH:
            db.add_all(rows)
            db.flush()
            for c in rows:
                known.setdefault(c.content_hash, c.id)
            rows = []
    db.add_all(rows)
    db.flush()
    doc.chunk_count = len(pieces)
    doc.meta = {**(doc.meta or {}), "chunking": dataclasses.asdict(settings),
                "quality": quality.quality_report(parsed, pieces)}
    return len(pieces)


def source_of(db: Session, document_id: int) -> tuple[str, str, str | None]:
    """``(stored path, file name, content type)`` of an uploaded document."""
    doc = db.get(Document, document_id)
    return doc.storage_path, doc.filename, doc.content_type or None


def store_parsed(db: Session, document_id: int, parsed: parsing.ParsedDocument) -> int:
    """Store a parse: the text, its metadata and fresh chunks (redacted first when the project
    asks). Flushes, never commits; raises ``AppError`` for chunk settings that do not apply.
    Returns the number of chunks. The parse runner is ``workers/documents/runner.py``."""
    doc = db.get(Document, document_id)
    project = db.get(Project, doc.project_id)
    red = redaction_settings(project)
    if red["enabled"] and not red["keep_original"]:
        # only redacted text may be stored: chunk the redacted document, offsets moved to match
        parsed, _ = redaction.redact_document(parsed, types=red["types"])
    doc.text = parsed.text
    doc.format = parsed.format
    doc.page_count = parsed.page_count
    doc.meta = {"pages": [list(p) for p in parsed.pages],
                "headings": [list(h) for h in parsed.headings],
                "parsed": parsed.metadata, "chars": len(parsed.text)}
    db.execute(delete(Chunk).where(Chunk.document_id == document_id))
    return _write_chunks(db, doc, project, parsed, chunk_settings(project))


def _dependent_samples(db: Session, document_id: int, limit: int = 20) -> list[int]:
    return list(db.scalars(select(Sample.id).where(
        (Sample.document_id == document_id)
        | Sample.chunk_id.in_(select(Chunk.id).where(Chunk.document_id == document_id)))
        .order_by(Sample.id).limit(limit)))


def preview_chunks(db: Session, *, project_id: int, document_id: int,
                   override: dict[str, Any] | None) -> dict[str, Any]:
    doc = get_document(db, project_id=project_id, document_id=document_id)
    if doc.status != "parsed":
        raise Conflict(f"document is {doc.status}, not parsed", code="document_not_parsed")
    settings = chunk_settings(db.get(Project, project_id), override)
    pieces = chunking.chunk_text(_parsed_from_document(doc), settings)
    return {"settings": dataclasses.asdict(settings), "count": len(pieces),
            "chunks": [dataclasses.asdict(p) for p in pieces[:200]]}


def rechunk(db: Session, *, project_id: int, document_id: int,
            override: dict[str, Any] | None) -> Document:
    doc = get_document(db, project_id=project_id, document_id=document_id)
    if doc.status != "parsed":
        raise Conflict(f"document is {doc.status}, not parsed", code="document_not_parsed")
    deps = _dependent_samples(db, document_id)
    if deps:
        raise Conflict("samples depend on this document's chunks", code="document_in_use",
                       extra={"sample_ids": deps})
    project = db.get(Project, project_id)
    settings = chunk_settings(project, override)
    db.execute(update(Chunk).where(Chunk.duplicate_of_id.in_(
        select(Chunk.id).where(Chunk.document_id == document_id))).values(duplicate_of_id=None,
                                                                          duplicate_kind=None))
    db.execute(delete(Chunk).where(Chunk.document_id == document_id))
    _write_chunks(db, doc, project, _parsed_from_document(doc), settings)
    db.flush()
    return doc


def delete_document(db: Session, *, project_id: int, document_id: int) -> None:
    doc = get_document(db, project_id=project_id, document_id=document_id)
    deps = _dependent_samples(db, document_id)
    if deps:
        raise Conflict(f"{len(deps)}{'+' if len(deps) == 20 else ''} sample(s) depend on this "
                       f"document; delete or detach them first", code="document_in_use",
                       extra={"sample_ids": deps})
    db.execute(update(Chunk).where(Chunk.duplicate_of_id.in_(
        select(Chunk.id).where(Chunk.document_id == document_id))).values(duplicate_of_id=None,
                                                                          duplicate_kind=None))
    path = Path(doc.storage_path)
    db.execute(delete(Chunk).where(Chunk.document_id == document_id))
    db.delete(doc)
    db.flush()
    path.unlink(missing_ok=True)


# -- near-duplicates ---------------------------------------------------------------------------

def mark_duplicates(db: Session, *, project_id: int, threshold: float = 0.8) -> dict[str, Any]:
    """Cluster the project's chunks (exact + MinHash LSH); mark members, delete nothing.

    The chunks are streamed (server-side cursor on PostgreSQL); only a digest and a signature of
    each distinct text are kept while clustering."""
    count = 0

    def chunks():
        nonlocal count
        result = db.execute(select(Chunk.id, Chunk.text).where(Chunk.project_id == project_id)
                            .order_by(Chunk.id),
                            execution_options={"yield_per": 2000, "stream_results": True})
        try:
            for cid, text in result:
                count += 1
                yield cid, text
        finally:
            result.close()

    clusters = dedup.find_duplicates(chunks(), threshold=threshold)
    db.execute(update(Chunk).where(Chunk.project_id == project_id)
               .values(duplicate_of_id=None, duplicate_kind=None))
    rows = [{"id": member, "duplicate_of_id": cluster.representative,
             "duplicate_kind": cluster.kind}
            for cluster in clusters for member in cluster.duplicates]
    for start in range(0, len(rows), 1000):  # ORM bulk UPDATE by primary key (executemany)
        db.execute(update(Chunk), rows[start:start + 1000])
    marked = len(rows)
    project = db.get(Project, project_id)
    report = {"threshold": threshold, "chunks": count, "clusters": len(clusters),
              "marked": marked, "at": utcnow().isoformat(),
              "items": [{"kind": c.kind, "representative": c.representative, "members": c.members,
                         "similarity": round(c.similarity, 4)} for c in clusters[:1000]]}
    project.settings = {**(project.settings or {}), "dedup_report": report}
    db.flush()
    return report


def document_counts(db: Session, project_id: int) -> list[tuple[str, object]]:
    rows = dict(db.execute(select(Document.status, func.count()).where(
        Document.project_id == project_id).group_by(Document.status)).all())
    chunks = db.scalar(select(func.coalesce(func.sum(Document.chunk_count), 0)).where(
        Document.project_id == project_id))
    return [("documents", sum(rows.values())), ("parsed", rows.get("parsed", 0)),
            ("failed", rows.get("failed", 0)), ("chunks", chunks)]
