from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base, BigId, JSONType, UTCDateTime, utcnow
from service.models.job import JobMixin


class ReviewDecision(Base):
    """One reviewer's independent decision on a sample (for double review and agreement)."""

    __tablename__ = "review_decisions"
    __table_args__ = (
        UniqueConstraint("sample_id", "reviewer_id"),
        Index("ix_review_decisions_project_id_reviewer_id", "project_id", "reviewer_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    decision: Mapped[str] = mapped_column(String(20))  # accepted|rejected|needs_changes
    reason: Mapped[str | None] = mapped_column(Text)
    messages: Mapped[list[dict[str, str]] | None] = mapped_column(JSONType)  # the answer as they left it
    sample_version: Mapped[int] = mapped_column(BigId)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BulkJob(JobMixin, Base):
    """A bulk change or assignment too large for one request, run by the ``review.bulk`` task.

    ``state`` holds the selection (filter, ``upto_id``), what to do (``spec``) and the progress
    (``last_id``, ``position``, counts); the task updates it in the same transaction as each batch
    of samples, so progress and changes never disagree.
    """

    __tablename__ = "bulk_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # change|assign
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    state: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReviewLease(Base):
    """A short reservation of a pending sample by the annotator that ``next`` handed it to, so
    concurrent annotators on a shared queue get different samples. It lapses at ``expires_at``
    (the annotator left) and is dropped when the sample is decided or skipped."""

    __tablename__ = "review_leases"
    __table_args__ = (Index("ix_review_leases_project_id_expires_at", "project_id", "expires_at"),)

    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
