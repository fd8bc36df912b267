"""The genre–audience fan-out of a generation job (``params.ga_pair_ids``): one unit per
(chunk, pair). Imports only models, so the generation domain can call it."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.errors import Invalid
from service.models import Chunk, GAPair

FIELD = "body.params.ga_pair_ids"


def chosen_pairs(params: dict[str, Any]) -> list[int] | None:
    """The pair ids a job fans out over, or None for a plain job (422 on a bad list)."""
    ids = params.get("ga_pair_ids")
    if ids is None:
        return None
    if not isinstance(ids, list) or not ids or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise Invalid("a non-empty list of pair ids", details=[
            {"field": FIELD, "message": "a non-empty list of pair ids"}])
    return sorted(set(ids))


def pairs_for_chunks(db: Session, *, project_id: int, chunk_ids: list[int],
                     pair_ids: list[int]) -> list[tuple[int, int]]:
    """``(chunk, pair)`` for every chosen pair of each chunk's own document (a chunk whose
    document has none of the chosen pairs gets no unit)."""
    pairs = db.execute(select(GAPair.id, GAPair.document_id).where(
        GAPair.project_id == project_id, GAPair.id.in_(pair_ids))).all()
    if len(pairs) != len(pair_ids):
        raise Invalid("no such genre–audience pair in this project", details=[
            {"field": FIELD, "message": "no such genre–audience pair in this project"}])
    by_doc: dict[int, list[int]] = {}
    for pid, doc in sorted(pairs):
        by_doc.setdefault(doc, []).append(pid)
    docs = dict(db.execute(select(Chunk.id, Chunk.document_id)
                           .where(Chunk.id.in_(chunk_ids))).all())
    return [(cid, pid) for cid in chunk_ids for pid in by_doc.get(docs.get(cid), [])]


def pairs_variables(db: Session, pair_ids: list[int]) -> dict[int, dict[str, Any]]:
    """What the units' prompts and provenance say of their pairs, by pair id, in one query
    (a pair deleted since: empty words)."""
    if not pair_ids:
        return {}
    found = {pid: {"id": pid, "genre": genre, "audience": audience}
             for pid, genre, audience in db.execute(
                 select(GAPair.id, GAPair.genre, GAPair.audience)
                 .where(GAPair.id.in_(set(pair_ids))))}
    return {pid: found.get(pid, {"id": pid, "genre": "", "audience": ""}) for pid in pair_ids}
