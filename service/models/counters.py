"""Maintained counters: samples per project and status, kept by database triggers.

The triggers (migration ``0019_project_counters``) run on every INSERT, UPDATE and DELETE of
``samples`` whatever issued it: the ORM, bulk SQL, an import's ``COPY``, a cascade from a
deleted project. No writer has to remember to call anything, and the project page reads a few
rows here instead of a ``GROUP BY`` over the project's samples.

PostgreSQL spreads one project's counts over ``SLOTS`` rows per status (the slot is the writing
transaction's id modulo ``SLOTS``), so concurrent reviewers' decisions rarely wait on the same
counter row; a count is the sum of its slots (each slot may be negative). SQLite has one writer
at a time and uses slot 0.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base

SLOTS = 64


class ProjectSampleCount(Base):
    """``n`` samples of ``project_id`` in ``status`` (one slot's share of it)."""

    __tablename__ = "project_sample_counts"
    # derived: the triggers rebuild it from ``samples``, so a backup leaves it out
    __table_args__: ClassVar[dict[str, Any]] = {"info": {"derived": True}}

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(20), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True, default=0)
    n: Mapped[int] = mapped_column(BigInteger, default=0)
