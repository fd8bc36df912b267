"""Evaluations on a preference version's held-out split.

A ``PreferenceEvalRun`` is one of two kinds:

* ``reward_accuracy``: for every frozen pair, the implicit DPO reward
  ``beta * (log p_policy(y|x) - log p_reference(y|x))`` of the chosen and of the rejected
  answer; accurate where the chosen one gets the higher reward;
* ``win_rate``: a candidate model and a baseline model each answer the held-out prompts and a
  judge provider compares the two answers, in both orders (so position bias cancels).

``models`` names the models (``{"policy", "reference"}`` or ``{"candidate", "baseline"}``, each
``{"kind": "base"|"training_job"|"provider", ...}``). A ``PreferenceEvalItem`` per frozen item
holds the answers and verdicts so far (``outputs``) and, once complete, its ``scores``.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base, BigId, JSONType, UTCDateTime, utcnow
from service.models.evaluation import EvalCounters
from service.models.job import JobMixin


class PreferenceEvalRun(EvalCounters, JobMixin, Base):
    __tablename__ = "preference_eval_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    preference_version_id: Mapped[int] = mapped_column(
        ForeignKey("preference_versions.id", ondelete="RESTRICT"))
    split: Mapped[str] = mapped_column(String(12), default="test")
    name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(20))  # reward_accuracy | win_rate
    models: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    training_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="SET NULL"), index=True)
    judge_provider_id: Mapped[int | None] = mapped_column(
        ForeignKey("llm_providers.id", ondelete="SET NULL"))
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PreferenceEvalItem(Base):
    __tablename__ = "preference_eval_items"
    __table_args__ = (UniqueConstraint("run_id", "item_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("preference_eval_runs.id", ondelete="CASCADE"),
                                        index=True)
    item_id: Mapped[int] = mapped_column(
        ForeignKey("preference_version_items.id", ondelete="CASCADE"), index=True)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    scores: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
