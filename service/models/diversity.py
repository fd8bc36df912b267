"""Coverage and diversity: the project's domain tree, genre–audience pairs per document, and the
jobs that build them (a tree from the documents, leaf tagging, pair proposals, distillation)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base, BigId, JSONType, UTCDateTime, utcnow
from service.models.job import JobMixin


class DomainNode(Base):
    """One node of a project's domain tree (two or three levels); a node without children is a
    leaf, and a sample names its leaf in ``Sample.domain_leaf_id``."""

    __tablename__ = "domain_nodes"
    __table_args__ = (Index("ix_domain_nodes_project_id_parent_id", "project_id", "parent_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("domain_nodes.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GAPair(Base):
    """A (genre, audience) pair proposed for a document: the same passage asked as a student, an
    engineer or a customer would ask it."""

    __tablename__ = "ga_pairs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"),
                                             index=True)
    genre: Mapped[str] = mapped_column(String(200))
    audience: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DiversityJob(JobMixin, Base):
    """A job of the diversity domain: ``tree`` (build the domain tree), ``tag`` (a judge names
    each sample's leaf), ``ga`` (propose pairs per document), ``distill`` (topic → sub-topics →
    questions → answers, without documents). ``result``: what it produced, and its progress."""

    __tablename__ = "diversity_jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    kind: Mapped[str] = mapped_column(String(20))
    provider_id: Mapped[int] = mapped_column(ForeignKey("llm_providers.id", ondelete="RESTRICT"))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
