from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, event
from sqlalchemy.orm import Mapped, attributes, mapped_column

from service.core.db import Base, BigId, JSONType, UTCDateTime, utcnow
from service.models.job import JobMixin


class SampleStatus(StrEnum):
    pending = "pending"
    accepted = "accepted"
    rejected = "rejected"
    needs_changes = "needs_changes"


class Sample(Base):
    """One training example in canonical OpenAI ``messages`` form."""

    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("project_id", "unit_key"),
        Index("ix_samples_project_id_id", "project_id", "id"),
        Index("ix_samples_project_id_status_id", "project_id", "status", "id"),
        Index("ix_samples_project_id_assignee_id_status", "project_id", "assignee_id", "status"),
        Index("ix_samples_chunk_id", "chunk_id"),
        Index("ix_samples_import_job_id", "import_job_id"),
        Index("ix_samples_project_id_domain_leaf_id", "project_id", "domain_leaf_id"),
        # list sorts (keyset on the sort key, ties by id)
        Index("ix_samples_project_id_updated_at_id", "project_id", "updated_at", "id"),
        Index("ix_samples_project_id_created_at_id", "project_id", "created_at", "id"),
        # tag filters: ``tags @> '["x"]'`` on PostgreSQL (on SQLite a plain index, unused)
        Index("ix_samples_tags", "tags", postgresql_using="gin",
              postgresql_ops={"tags": "jsonb_path_ops"}),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    messages: Mapped[list[dict[str, str]]] = mapped_column(JSONType)
    reasoning: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default=SampleStatus.pending.value)
    version: Mapped[int] = mapped_column(Integer, default=1)
    content_hash: Mapped[str] = mapped_column(String(64))
    # the folded text of the messages, for text search (service/samples/search.py); written
    # with the messages (service/samples/store.py), indexed by pg_trgm / SQLite FTS5 (0011)
    # (deferred: never read back into Python; lists do not carry it)
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="",
                                             deferred=True)
    source: Mapped[str] = mapped_column(String(20), default="manual")  # manual|import|generation
    unit_key: Mapped[str | None] = mapped_column(String(200))  # idempotency key for generated units
    chunk_id: Mapped[int | None] = mapped_column(ForeignKey("chunks.id", ondelete="RESTRICT"))
    document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id", ondelete="RESTRICT"), index=True)
    generation_job_id: Mapped[int | None] = mapped_column(BigId)
    # the leaf of the project's domain tree the sample covers (service/diversity); no foreign
    # key (SQLite would rebuild the table): the tree's edits move or clear it themselves
    domain_leaf_id: Mapped[int | None] = mapped_column(BigId)
    import_job_id: Mapped[int | None] = mapped_column(ForeignKey("import_jobs.id", ondelete="SET NULL"))
    import_line: Mapped[int | None] = mapped_column(Integer)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    scores: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reviewed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reject_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


@event.listens_for(Sample, "before_insert")
def _sample_insert(_mapper: Any, _connection: Any, target: Sample) -> None:
    from service.samples import store  # the gate lives in the samples domain

    store.prepare(target)


@event.listens_for(Sample, "before_update")
def _sample_update(_mapper: Any, _connection: Any, target: Sample) -> None:
    if attributes.get_history(target, "messages").has_changes():
        from service.samples import store

        store.prepare(target)


class SampleRevision(Base):
    """Audit trail: every edit and status change, with actor and time."""

    __tablename__ = "sample_revisions"
    __table_args__ = (Index("ix_sample_revisions_sample_id_id", "sample_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(20))  # create|edit|status|import|bulk
    messages_before: Mapped[list[dict[str, str]] | None] = mapped_column(JSONType)
    messages_after: Mapped[list[dict[str, str]]] = mapped_column(JSONType)
    status_before: Mapped[str | None] = mapped_column(String(20))
    status_after: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ImportJob(JobMixin, Base):
    __tablename__ = "import_jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(500))
    storage_path: Mapped[str] = mapped_column(String(500))
    format: Mapped[str | None] = mapped_column(String(20))
    mapping: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    mode: Mapped[str] = mapped_column(String(10), default="strict")
    lines_read: Mapped[int] = mapped_column(Integer, default=0)
    # progress: the file's size, and how far the runner's reader got (after each batch)
    bytes_total: Mapped[int | None] = mapped_column(BigId)
    bytes_read: Mapped[int] = mapped_column(BigId, default=0, server_default="0")
    imported: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
