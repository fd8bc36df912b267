"""Samples in canonical ``messages`` form: create, list, edit with optimistic locking, status,
bulk changes, history, imports and token statistics. Services flush; callers commit."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Float,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    or_,
    select,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from service.core.db import utcnow
from service.core.errors import Conflict, Invalid
from service.core.lookup import get_in_project, in_project
from service.core.pagination import decode_cursor, encode_cursor
from service.models import Chunk, Document, ProjectSampleCount, Sample, SampleRevision, SampleStatus
from service.samples import search, store
from service.samples import tokens as tokens_mod
from service.samples.store import content_hash
from service.samples.validation import check_messages

__all__ = ["check_messages", "content_hash", "create_sample", "update_sample"]

STATUSES = {s.value for s in SampleStatus}
def _check_status(status: str) -> str:
    if status not in STATUSES:
        raise Invalid(f"unknown status {status!r}",
                      details=[{"field": "body.status", "message": f"one of {sorted(STATUSES)}"}])
    return status


def _revision(sample: Sample, *, action: str, actor_id: int | None, before: list | None,
              status_before: str | None, comment: str | None = None) -> SampleRevision:
    return SampleRevision(sample_id=sample.id, version=sample.version, action=action,
                          messages_before=before, messages_after=sample.messages,
                          status_before=status_before, status_after=sample.status,
                          actor_id=actor_id, comment=comment)


def create_sample(db: Session, *, project_id: int, messages: Any, actor_id: int | None = None,
                  source: str = "manual", status: str = "pending", tags: list[str] | None = None,
                  reasoning: str | None = None, provenance: dict[str, Any] | None = None,
                  chunk_id: int | None = None, document_id: int | None = None,
                  generation_job_id: int | None = None, unit_key: str | None = None,
                  scores: dict[str, Any] | None = None) -> Sample:
    msgs = check_messages(messages, "body.messages")
    sample = Sample(project_id=project_id, **store.message_columns(msgs),
                    status=_check_status(status), source=source,
                    tags=sorted(set(tags or [])),
                    reasoning=reasoning, provenance=provenance or {}, chunk_id=chunk_id,
                    document_id=document_id, generation_job_id=generation_job_id,
                    unit_key=unit_key, scores=scores or {}, version=1)
    db.add(sample)
    db.flush()
    db.add(_revision(sample, action="create", actor_id=actor_id, before=None, status_before=None))
    db.flush()
    return sample


def check_source(db: Session, *, project_id: int, document_id: int | None,
                 chunk_id: int | None) -> tuple[int | None, int | None]:
    """``(document_id, chunk_id)`` of a sample's source, both of this project (a chunk names
    its document; a document given with it must be that one)."""
    if chunk_id is not None:
        chunk = in_project(db, Chunk, chunk_id, project_id=project_id)
        if chunk is None:
            raise Invalid("chunk not found in this project",
                          details=[{"field": "body.chunk_id", "message": "unknown chunk"}])
        if document_id is not None and document_id != chunk.document_id:
            raise Invalid("the chunk belongs to another document", details=[
                {"field": "body.document_id", "message": f"the chunk is in {chunk.document_id}"}])
        return chunk.document_id, chunk.id
    if document_id is not None and in_project(db, Document, document_id,
                                              project_id=project_id) is None:
        raise Invalid("document not found in this project",
                      details=[{"field": "body.document_id", "message": "unknown document"}])
    return document_id, None


def get_sample(db: Session, *, project_id: int, sample_id: int) -> Sample:
    return get_in_project(db, Sample, sample_id, project_id=project_id, what="sample",
                          code="sample_not_found")


def _stale(db: Session, sample_id: int) -> Conflict:
    db.expire_all()
    current = db.get(Sample, sample_id)
    return Conflict("the sample was changed by someone else; reload and merge",
                    code="version_conflict", extra={"current": sample_to_dict(current)})


def _changes_nothing(sample: Sample, values: dict[str, Any]) -> bool:
    """Whether an edit's ``values`` leave ``sample`` as it is (messages in canonical form)."""
    if "messages" in values and (values["content_hash"] != sample.content_hash
                                 or values["messages"] != sample.messages):
        return False
    if "tags" in values and values["tags"] != sorted(set(sample.tags or [])):
        return False
    return "reasoning" not in values or (values["reasoning"] or None) == (sample.reasoning or None)


def update_sample(db: Session, *, project_id: int, sample_id: int, expected_version: int,
                  actor_id: int | None, messages: Any = None, tags: list[str] | None = None,
                  reasoning: str | None = None, status: str | None = None,
                  reject_reason: str | None = None, comment: str | None = None) -> Sample:
    """Apply an edit only if the sample is still at ``expected_version`` (else 409 + current).

    The compare-and-set is one UPDATE ... WHERE version = :expected, so of two concurrent
    writers exactly one wins, whatever the isolation level. An edit (no ``status``) that changes
    nothing writes nothing: no revision, the same version, the sample as it is.
    """
    sample = get_sample(db, project_id=project_id, sample_id=sample_id)
    before_msgs, before_status = sample.messages, sample.status
    values: dict[str, Any] = {"version": Sample.version + 1, "updated_at": utcnow()}
    if messages is not None:
        values.update(store.message_columns(check_messages(messages, "body.messages")))
    if tags is not None:
        values["tags"] = sorted(set(tags))
    if reasoning is not None:
        values["reasoning"] = reasoning
    if status is not None:
        values["status"] = _check_status(status)
        values["reject_reason"] = reject_reason if status == "rejected" else None
        if status != "pending":
            values.update(reviewed_by_id=actor_id, reviewed_at=utcnow())
    elif _changes_nothing(sample, values):
        # the messages it already has (in any key order), the same tags or reasoning: nothing
        # to write, no revision, the same version; from a stale version still a conflict
        if sample.version != expected_version:
            raise _stale(db, sample_id)
        return sample
    # RETURNING refreshes ``sample`` (populate_existing) in the same round trip as the write
    written = db.scalars(
        update(Sample).where(Sample.id == sample_id, Sample.version == expected_version)
        .values(**values).returning(Sample)
        .execution_options(synchronize_session=False, populate_existing=True)
    ).first()
    if written is None:
        raise _stale(db, sample_id)
    action = "edit" if messages is not None or tags is not None or reasoning is not None else "status"
    db.add(_revision(sample, action=action, actor_id=actor_id, before=before_msgs,
                     status_before=before_status, comment=comment or reject_reason))
    db.flush()
    return sample


def history(db: Session, *, project_id: int, sample_id: int) -> list[SampleRevision]:
    get_sample(db, project_id=project_id, sample_id=sample_id)
    return list(db.scalars(select(SampleRevision).where(SampleRevision.sample_id == sample_id)
                           .order_by(SampleRevision.id)))


# -- listing and filters -----------------------------------------------------------------------

@dataclass
class SampleFilter:
    status: list[str] = field(default_factory=list)
    tag: str | None = None
    document_id: int | None = None
    generation_job_id: int | None = None
    import_job_id: int | None = None
    assignee_id: int | None = None
    unassigned: bool = False
    reviewer_id: int | None = None
    q: str | None = None
    score_key: str | None = None
    score_min: float | None = None
    score_max: float | None = None
    ids: list[int] | None = None
    domain_leaf_id: int | None = None  # the leaf of the domain tree (service/diversity)

    def clauses(self, db: Session, project_id: int) -> list[Any]:
        out: list[Any] = [Sample.project_id == project_id]
        if self.status:
            for s in self.status:
                _check_status(s)
            out.append(Sample.status.in_(self.status))
        if self.ids is not None:
            out.append(Sample.id.in_(self.ids))
        if self.document_id is not None:
            out.append(Sample.document_id == self.document_id)
        if self.generation_job_id is not None:
            out.append(Sample.generation_job_id == self.generation_job_id)
        if self.import_job_id is not None:
            out.append(Sample.import_job_id == self.import_job_id)
        if self.domain_leaf_id is not None:
            out.append(Sample.domain_leaf_id == self.domain_leaf_id)
        if self.assignee_id is not None:
            out.append(Sample.assignee_id == self.assignee_id)
        if self.unassigned:
            out.append(Sample.assignee_id.is_(None))
        if self.reviewer_id is not None:
            out.append(Sample.reviewed_by_id == self.reviewer_id)
        dialect = db.get_bind().dialect.name
        if self.tag:
            out.append(has_tag(db, self.tag))
        if self.q:
            found = search.clause(db, self.q)
            if found is not None:
                out.append(found)
        if self.score_key and (self.score_min is not None or self.score_max is not None):
            out.append(score_between(dialect, self.score_key, self.score_min, self.score_max))
        return out


def has_tag(db: Session, tag: str) -> ColumnElement[bool]:
    """``tag`` is one of the sample's tags: exact membership, never a substring match.

    PostgreSQL: ``tags @> '["tag"]'``, which the GIN ``jsonb_path_ops`` index ``ix_samples_tags``
    answers (``type_coerce`` because the column's declared type is plain JSON, whose
    ``contains`` would be a LIKE). SQLite: ``EXISTS (SELECT 1 FROM json_each(tags) WHERE value
    = :tag)``; the stored text may escape non-ASCII, so only a parsed comparison is exact.
    Negate it (``~has_tag(...)``) for "not tagged".
    """
    return has_any_tag(db.get_bind().dialect.name, [tag])


def has_any_tag(dialect: str, tags: list[str]) -> ColumnElement[bool]:
    """At least one of ``tags`` is one of the sample's tags (none given: no sample), as
    :func:`has_tag` says; on PostgreSQL one ``@>`` per tag, each answered by the GIN index."""
    if not tags:
        return false()
    unique = list(dict.fromkeys(tags))
    if dialect == "postgresql":
        column = type_coerce(Sample.tags, JSONB)
        return or_(*(column.contains([tag]) for tag in unique))
    each = func.json_each(Sample.tags).table_valued("value")
    return exists(select(1).select_from(each).where(each.c.value.in_(unique)))


def score_between(dialect: str, key: str, lo: float | None = None,
                  hi: float | None = None) -> ColumnElement[bool]:
    """The sample's score ``key`` is a number within ``[lo, hi]`` (a bound left out: no limit on
    that side), compared as a double, the same on both databases. A score that is not a number
    (a judge's rationale, a label such as ``"high"``, ``true``, ``null``) or is missing never
    matches: it is not cast (PostgreSQL would fail the whole query on the first such row) and
    not compared as text or as 0/1 (SQLite would).

    PostgreSQL: ``CASE WHEN jsonb_typeof(scores -> :key) = 'number' THEN (scores ->> :key)::float8
    END`` (a ``CASE``, so the cast only ever sees numbers). SQLite: ``EXISTS`` over
    ``json_each(scores)`` with ``key = :key`` and an integer or real ``type``: any key,
    quotes and dots included, without building a JSON path from it."""
    def within(value: Any) -> list[Any]:
        return [c for c in ((value >= lo) if lo is not None else None,
                            (value <= hi) if hi is not None else None) if c is not None]

    if dialect == "postgresql":
        field = type_coerce(Sample.scores, JSONB)[key]
        value = case((func.jsonb_typeof(field) == "number", cast(field.astext, Float)))
        return and_(value.is_not(None), *within(value))
    each = func.json_each(Sample.scores).table_valued("key", "value", "type")
    return exists(select(1).select_from(each).where(
        each.c.key == key, each.c.type.in_(["integer", "real"]), *within(each.c.value)))


SORTS: dict[str, tuple[str, bool]] = {
    "id": ("id", False), "-id": ("id", True),
    "updated_at": ("updated_at", False), "-updated_at": ("updated_at", True),
    "created_at": ("created_at", False), "-created_at": ("created_at", True),
}
DEFAULT_SORT = "id"


def check_sort(sort: str | None, field_name: str = "query.sort") -> str:
    """The sort key, or 422 naming the parameter; ``None`` means the default (id ascending)."""
    if sort is None or sort == "":
        return DEFAULT_SORT
    if sort not in SORTS:
        raise Invalid(f"unknown sort {sort!r}",
                      details=[{"field": field_name, "message": f"one of {list(SORTS)}"}])
    return sort


def sort_order(sort: str, entity: Any = Sample) -> list[Any]:
    """ORDER BY for ``sort``: the key, then id in the same direction (a total, stable order);
    ``entity``: samples or an alias of it."""
    name, desc = SORTS[sort]
    cols = [getattr(entity, name)] if name == "id" else [getattr(entity, name), entity.id]
    return [c.desc() for c in cols] if desc else [c.asc() for c in cols]


def _bad_cursor(message: str = "not a cursor") -> Invalid:
    return Invalid("invalid cursor", details=[{"field": "query.cursor", "message": message}])


def _after(sort: str, cursor: str) -> ColumnElement[bool]:
    """Rows strictly after the cursor's (key, id) in ``sort`` order.

    A row-value comparison ``(key, id) > (:key, :id)``, which both PostgreSQL and SQLite
    evaluate lexicographically, so ties on the key are broken by id and no row is skipped or
    repeated across pages.
    """
    raw = decode_cursor(cursor)
    name, desc = SORTS[sort]
    after_id = raw.get("id")
    if not isinstance(after_id, int) or isinstance(after_id, bool):
        raise _bad_cursor()
    legacy = "sort" not in raw and name == "id"  # cursors from before sorting: {"id": n}
    if raw.get("sort") != sort and not legacy:
        raise _bad_cursor("this cursor belongs to another sort order; start from the first page")
    if name == "id":
        return Sample.id < after_id if desc else Sample.id > after_id
    try:
        key = datetime.fromisoformat(raw["key"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad_cursor() from exc
    col = getattr(Sample, name)
    row = tuple_(col, Sample.id)
    bound = tuple_(type_coerce(key, col.type), type_coerce(after_id, Sample.id.type))
    return row < bound if desc else row > bound


def _cursor_for(sort: str, sample: Sample) -> str:
    name, _ = SORTS[sort]
    if name == "id":
        return encode_cursor({"sort": sort, "id": sample.id})
    return encode_cursor({"sort": sort, "key": getattr(sample, name).isoformat(), "id": sample.id})


def list_samples(db: Session, *, project_id: int, flt: SampleFilter, limit: int,
                 cursor: str | None, descending: bool = False,
                 sort: str | None = None) -> tuple[list[Sample], str | None]:
    """One keyset page in ``sort`` order (``descending`` is the old spelling of ``-id``)."""
    sort = check_sort(sort) if sort else ("-id" if descending else DEFAULT_SORT)
    after = [_after(sort, cursor)] if cursor else []
    if flt.q and search.fold(flt.q) and db.get_bind().dialect.name == "postgresql":
        rows = search.pg_page(db, where=[*replace(flt, q=None).clauses(db, project_id), *after],
                              query=flt.q, order=lambda e: sort_order(sort, e), limit=limit + 1)
    else:
        stmt = select(Sample).where(and_(*flt.clauses(db, project_id), *after))
        rows = list(db.scalars(stmt.order_by(*sort_order(sort)).limit(limit + 1)))
    nxt = None
    if len(rows) > limit:
        rows = rows[:limit]
        nxt = _cursor_for(sort, rows[-1])
    return rows, nxt


def count_samples(db: Session, *, project_id: int, flt: SampleFilter) -> int:
    return db.scalar(select(func.count()).select_from(Sample).where(and_(*flt.clauses(db, project_id))))


def status_counts(db: Session, *, project_id: int) -> dict[str, int]:
    """Samples per status, from the counters the database keeps (``service/models/counters.py``;
    a few rows, not a ``GROUP BY`` over the project's samples)."""
    rows = db.execute(select(ProjectSampleCount.status, func.sum(ProjectSampleCount.n))
                      .where(ProjectSampleCount.project_id == project_id)
                      .group_by(ProjectSampleCount.status)).all()
    counts = {s: 0 for s in sorted(STATUSES)}
    counts.update({status: int(n) for status, n in rows if n})
    return counts


def bulk_values(row: Any, *, actor_id: int | None, status: str | None = None,
                add_tags: list[str] | None = None, remove_tags: list[str] | None = None,
                assignee_id: int | None = None, unassign: bool = False) -> dict[str, Any]:
    """The column values a bulk change sets on one sample (empty: it is already as asked).
    ``row`` has ``status``, ``tags`` and ``assignee_id``."""
    values: dict[str, Any] = {}
    if status is not None and row.status != status:
        values["status"] = status
        if status != "pending":
            values.update(reviewed_by_id=actor_id, reviewed_at=utcnow())
    if add_tags or remove_tags:
        tags = (set(row.tags or []) | set(add_tags or [])) - set(remove_tags or [])
        if sorted(tags) != sorted(row.tags or []):
            values["tags"] = sorted(tags)
    if assignee_id is not None and row.assignee_id != assignee_id:
        values["assignee_id"] = assignee_id
    if unassign and row.assignee_id is not None:
        values["assignee_id"] = None
    return values


def apply_bulk(db: Session, row: Any, values: dict[str, Any], actor_id: int | None) -> bool:
    """Compare-and-set one sample at the version ``row`` was read at, and add its ``bulk``
    revision. False: someone changed the sample since (it is left as they made it)."""
    version = row.version + 1
    result = db.execute(update(Sample).where(Sample.id == row.id, Sample.version == row.version)
                        .values(**values, version=version, updated_at=utcnow())
                        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        return False
    db.add(SampleRevision(sample_id=row.id, version=version, action="bulk",
                          messages_before=row.messages, messages_after=row.messages,
                          status_before=row.status, status_after=values.get("status", row.status),
                          actor_id=actor_id, comment=None))
    return True


BULK_COLUMNS = (Sample.id, Sample.version, Sample.status, Sample.tags, Sample.assignee_id,
                Sample.messages)


def bulk_change_row(db: Session, row: Any, *, actor_id: int | None, **spec: Any) -> str:
    """Apply a bulk change (``bulk_values`` arguments) to one sample read with ``BULK_COLUMNS``:
    ``"unchanged"`` (already as asked), ``"changed"`` or ``"skipped"`` (edited meanwhile)."""
    values = bulk_values(row, actor_id=actor_id, **spec)
    if not values:
        return "unchanged"
    return "changed" if apply_bulk(db, row, values, actor_id) else "skipped"


def bulk_update(db: Session, *, project_id: int, flt: SampleFilter, actor_id: int | None,
                status: str | None = None, add_tags: list[str] | None = None,
                remove_tags: list[str] | None = None, assignee_id: int | None = None,
                unassign: bool = False, batch: int = 1000) -> dict[str, int]:
    """Change every sample matching ``flt``; each changed sample gets a revision. A sample
    edited by someone else between our read and our write is skipped, never overwritten.
    Returns the counts ``changed``, ``unchanged`` (already as asked) and ``skipped``."""
    if status is not None:
        _check_status(status)
    counts = {"changed": 0, "unchanged": 0, "skipped": 0}
    last_id = 0
    clauses = flt.clauses(db, project_id)
    while True:
        rows = db.execute(select(*BULK_COLUMNS).where(and_(*clauses), Sample.id > last_id)
                          .order_by(Sample.id).limit(batch)).all()
        if not rows:
            break
        for row in rows:
            counts[bulk_change_row(db, row, actor_id=actor_id, status=status, add_tags=add_tags,
                                   remove_tags=remove_tags, assignee_id=assignee_id,
                                   unassign=unassign)] += 1
        last_id = rows[-1].id
        db.flush()
    return counts


# -- token statistics --------------------------------------------------------------------------

def token_stats(db: Session, *, project_id: int, tokenizer: str | None = None,
                flt: SampleFilter | None = None) -> dict[str, Any]:
    tok = tokens_mod.get_tokenizer(tokenizer)
    totals: list[int] = []
    assistant: list[int] = []
    clauses = (flt or SampleFilter()).clauses(db, project_id)
    for (msgs,) in db.execute(select(Sample.messages).where(and_(*clauses))
                              .execution_options(yield_per=2000)):
        stats = tokens_mod.message_token_stats(msgs, tok)
        totals.append(stats["total"])
        assistant.append(stats["assistant"])
    return {"tokenizer": tok.name, "total": tokens_mod.summarize(totals),
            "assistant": tokens_mod.summarize(assistant)}


def sample_to_dict(sample: Sample | None) -> dict[str, Any] | None:
    if sample is None:
        return None
    return {
        "id": sample.id, "project_id": sample.project_id, "messages": sample.messages,
        "reasoning": sample.reasoning, "status": sample.status, "version": sample.version,
        "tags": sample.tags, "scores": sample.scores, "assignee_id": sample.assignee_id,
        "reviewed_by_id": sample.reviewed_by_id, "reject_reason": sample.reject_reason,
        "updated_at": sample.updated_at.isoformat() if sample.updated_at else None,
    }
