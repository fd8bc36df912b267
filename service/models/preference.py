"""Preference data: comparison items (a prompt and two or more candidate responses), pairwise
decisions by annotators, and frozen preference versions (like SFT ``DatasetVersion``s).

An item's effective preference lives on the item itself (``outcome``, ``chosen_id``,
``rejected_id``, ``chosen_text``): set when the decisions agree (or by an import of decided
pairs), or by a lead's adjudication when they do not. A version copies those into
``PreferenceVersionItem`` rows as canonical JSON text and never changes afterwards.
"""
from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base, BigId, CanonicalJSON, JSONType, UTCDateTime, utcnow
from service.models.job import JobMixin


class Outcome(StrEnum):
    preferred = "preferred"  # one candidate is better than the other
    tie = "tie"  # equally good: no pair is exported
    both_bad = "both_bad"  # neither is acceptable: KTO's undesirable examples only


class ItemStatus(StrEnum):
    pending = "pending"  # fewer decisions than the project's review overlap
    decided = "decided"  # the decisions agree (or an imported, decided pair)
    disputed = "disputed"  # the decisions disagree: waits for a lead
    adjudicated = "adjudicated"  # a lead decided


class PreferenceItem(Base):
    """One comparison: the prompt (messages ending with a user turn), its source chunk and the
    candidates in ``PreferenceCandidate`` rows."""

    __tablename__ = "preference_items"
    __table_args__ = (
        UniqueConstraint("project_id", "unit_key"),
        Index("ix_preference_items_project_id_status_id", "project_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    prompt: Mapped[list[dict[str, str]]] = mapped_column(JSONType)
    chunk_id: Mapped[int | None] = mapped_column(ForeignKey("chunks.id", ondelete="SET NULL"), index=True)
    document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id", ondelete="SET NULL"), index=True)
    sample_id: Mapped[int | None] = mapped_column(ForeignKey("samples.id", ondelete="SET NULL"), index=True)
    source: Mapped[str] = mapped_column(String(20), default="manual")  # manual|import|sample
    unit_key: Mapped[str | None] = mapped_column(String(200))  # idempotency key of a creator
    status: Mapped[str] = mapped_column(String(20), default=ItemStatus.pending.value)
    outcome: Mapped[str | None] = mapped_column(String(20))
    chosen_id: Mapped[int | None] = mapped_column(BigId)
    rejected_id: Mapped[int | None] = mapped_column(BigId)
    chosen_text: Mapped[str | None] = mapped_column(Text)  # the preferred answer as edited
    # an LLM judge's pre-ranking: {"chosen_id", "rejected_id" | null (tie), "agree", ...}
    judge: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class PreferenceCandidate(Base):
    """One candidate response of an item, with where it came from (provider, model, sampling
    parameters, generation job; an SFT sample; an import line)."""

    __tablename__ = "preference_candidates"
    __table_args__ = (UniqueConstraint("item_id", "position"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("preference_items.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PreferenceDecision(Base):
    """One annotator's pairwise decision on an item (``chosen_id`` over ``rejected_id``, a tie or
    both bad), with an optional edit of the chosen answer and a reason."""

    __tablename__ = "preference_decisions"
    __table_args__ = (
        UniqueConstraint("item_id", "annotator_id"),
        Index("ix_preference_decisions_project_id_annotator_id", "project_id", "annotator_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("preference_items.id", ondelete="CASCADE"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    outcome: Mapped[str] = mapped_column(String(20))
    chosen_id: Mapped[int | None] = mapped_column(BigId)
    rejected_id: Mapped[int | None] = mapped_column(BigId)
    edited_text: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PreferenceGenerationJob(JobMixin, Base):
    """Drafts the missing candidates of items: candidate ``i`` from ``sources[i]`` (a provider
    and its sampling parameters: two providers, or one at two temperatures or seeds)."""

    __tablename__ = "preference_generation_jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    sources: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    item_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    total_items: Mapped[int] = mapped_column(Integer, default=0)
    done_items: Mapped[int] = mapped_column(Integer, default=0)
    failed_items: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PreferenceVersion(JobMixin, Base):
    """An immutable, frozen selection of decided items with a split and a seed."""

    __tablename__ = "preference_versions"
    __table_args__ = (UniqueConstraint("project_id", "number"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200), default="preferences")
    filter: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    split: Mapped[dict[str, float]] = mapped_column(JSONType, default=dict)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    counts: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    stats: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    built_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PreferenceVersionItem(Base):
    """One frozen item: the prompt, the chosen text (None when both were bad) and the rejected
    texts, each stored as the canonical JSON text exports copy."""

    __tablename__ = "preference_version_items"
    __table_args__ = (
        UniqueConstraint("version_id", "item_id"),
        Index("ix_preference_version_items_version_id_split_position", "version_id", "split",
              "position"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("preference_versions.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("preference_items.id", ondelete="RESTRICT"), index=True)
    split: Mapped[str] = mapped_column(String(12))
    position: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(20))
    prompt: Mapped[list[dict[str, str]]] = mapped_column(CanonicalJSON)
    chosen: Mapped[str | None] = mapped_column(CanonicalJSON)
    rejected: Mapped[list[str]] = mapped_column(CanonicalJSON)


class PreferenceLease(Base):
    """A short reservation of a comparison item by the annotator that ``next`` handed it to, so
    annotators sharing the queue get different pairs (as ``ReviewLease`` does for samples). It
    lapses at ``expires_at`` and is dropped when that annotator decides the item."""

    __tablename__ = "preference_leases"
    __table_args__ = (Index("ix_preference_leases_project_id_expires_at", "project_id",
                            "expires_at"),)

    item_id: Mapped[int] = mapped_column(ForeignKey("preference_items.id", ondelete="CASCADE"),
                                         primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
