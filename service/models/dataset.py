from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base, BigId, CanonicalJSON, JSONType, UTCDateTime, utcnow
from service.models.job import JobMixin


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    default_format: Mapped[str] = mapped_column(String(20), default="openai")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DatasetVersion(JobMixin, Base):
    """An immutable, frozen selection of sample revisions with a split."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "number"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    filter: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    split: Mapped[dict[str, float]] = mapped_column(JSONType, default=dict)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    stratify_by: Mapped[str | None] = mapped_column(String(20))  # None|document
    # omit|think: a sample's reasoning is dropped, or frozen into its last assistant turn as
    # "<think>\n…\n</think>\n\n" + answer (the form reasoning chat templates train on)
    reasoning: Mapped[str] = mapped_column(String(10), default="omit")
    counts: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    # build progress: samples the filter selected, and how many of them are frozen (or refused)
    progress_total: Mapped[int | None] = mapped_column(Integer)
    progress_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    stats: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    leakage: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    built_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DatasetVersionItem(Base):
    """One frozen sample revision in a version. The messages are copied: the version never changes."""

    __tablename__ = "dataset_version_items"
    __table_args__ = (
        UniqueConstraint("version_id", "sample_id"),
        Index("ix_dataset_version_items_version_id_split_position", "version_id", "split", "position"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id", ondelete="CASCADE"))
    # the frozen sample's and revision's ids, not foreign keys: the item is its own copy, and a
    # build's COPY would check and lock every sample and revision (migration 0022)
    sample_id: Mapped[int] = mapped_column(BigId)
    revision_id: Mapped[int | None] = mapped_column(BigId)
    sample_version: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(12))
    position: Mapped[int] = mapped_column(Integer)
    # canonical orjson text of the frozen messages (role, content): exports copy it as is
    messages: Mapped[list[dict[str, str]]] = mapped_column(CanonicalJSON)
    content_hash: Mapped[str] = mapped_column(String(64))
    document_id: Mapped[int | None] = mapped_column(BigId)


class DatasetExport(JobMixin, Base):
    __tablename__ = "dataset_exports"
    __table_args__ = (UniqueConstraint("version_id", "format"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id", ondelete="CASCADE"))
    format: Mapped[str] = mapped_column(String(20))
    progress: Mapped[int] = mapped_column(Integer, default=0)
    path: Mapped[str | None] = mapped_column(String(500))
    files: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
